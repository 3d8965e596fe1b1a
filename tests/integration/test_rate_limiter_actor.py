"""The RateLimiter actor on the session's Ray: leases through the derived client, and a
SIGKILLed limiter restarted by Ray, starting full (at most one burst more)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import ray

from actors.rate_limiter import RateLimiterActor
from actors.remote import remote
from forge.limits.lease import LeasedAdmission
from forge.limits.limiter import RateLimiter


def test_leases_through_the_actor_and_a_restart_admits_at_most_one_burst_more(platform):
    actor = RateLimiterActor.options(name="test-rate-limiter", namespace="tests").remote()
    client = remote(actor, RateLimiter)

    async def burst(replica: LeasedAdmission, n: int) -> int:
        return sum([(await replica.admit("key:live:rpm", 600)).allowed for _ in range(n)])

    replica = LeasedAdmission(client.grant, client.give_back, replicas=1)
    admitted = asyncio.run(burst(replica, 30))
    assert 10 <= admitted <= 11  # a burst of 10 (600 a minute), maybe one refilled token
    pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        try:
            assert ray.get(actor.ping.remote(), timeout=10)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    fresh = LeasedAdmission(client.grant, client.give_back, replicas=1)
    assert 10 <= asyncio.run(burst(fresh, 30)) <= 11  # full again: one burst, no more
    ray.kill(actor)
