"""The control plane's limits facet on the session's Ray (a control-plane actor hosting
that facet alone): leases through the derived client, and a SIGKILLed limiter restarted
by Ray, starting full (at most one burst more)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import ray

from actors.control_plane import ControlPlaneActor
from actors.facets import FacetHandle
from actors.remote import remote
from forge.limits.concurrency import ConcurrencyLeases
from forge.limits.lease import LeasedAdmission
from forge.limits.limiter import RateLimiter


def kill_and_wait_for_restart(actor) -> None:
    """SIGKILL the actor's process; return once Ray has it answering again."""
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


def test_leases_through_the_actor_and_a_restart_admits_at_most_one_burst_more(platform):
    actor = ControlPlaneActor.options(name="test-rate-limiter", namespace="tests").remote(
        ("limits",)
    )
    client = remote(FacetHandle(actor, "limits"), RateLimiter)

    async def burst(replica: LeasedAdmission, n: int) -> tuple[int, int]:
        """Admitted of ``n``, and the most a bucket of 10 at 10 a second could have
        refilled meanwhile (a loaded machine makes the burst take longer)."""
        t0 = time.monotonic()
        admitted = sum([(await replica.admit("key:live:rpm", 600)).allowed for _ in range(n)])
        return admitted, 10 + 1 + int((time.monotonic() - t0) * 10)

    replica = LeasedAdmission(client.grant, client.give_back, replicas=1)
    admitted, most = asyncio.run(burst(replica, 30))
    assert 10 <= admitted <= most  # a burst of 10 (600 a minute), and what refilled
    kill_and_wait_for_restart(actor)
    fresh = LeasedAdmission(client.grant, client.give_back, replicas=1)
    admitted, most = asyncio.run(burst(fresh, 30))
    assert 10 <= admitted <= most  # full again: one burst, no more
    ray.kill(actor)


def test_permits_through_the_actor_and_a_restarted_limiter_relearns_them(platform):
    """Concurrent-request permits through the derived client; SIGKILLed, the limiter
    comes back empty and learns what a replica holds from its next report."""
    actor = ControlPlaneActor.options(name="test-permits", namespace="tests").remote(("limits",))
    limits = FacetHandle(actor, "limits")
    client = remote(limits, RateLimiter)
    name = "key:live:*:concurrent"

    async def hold_two() -> ConcurrencyLeases:
        replica = ConcurrencyLeases(client.acquire, client.release, client.report, "r1")
        assert (await replica.enter(name, 2)).allowed and (await replica.enter(name, 2)).allowed
        other = ConcurrencyLeases(client.acquire, client.release, client.report, "r2")
        assert not (await other.enter(name, 2)).allowed
        return replica

    replica = asyncio.run(hold_two())
    kill_and_wait_for_restart(actor)
    assert ray.get(limits.in_flight.remote(name), timeout=30) == 0  # forgotten

    async def report_then_refuse() -> bool:
        await replica.sweep()  # nothing idle to give back; reports its two
        other = ConcurrencyLeases(client.acquire, client.release, client.report, "r2")
        return (await other.enter(name, 2)).allowed

    assert not asyncio.run(report_then_refuse())
    assert ray.get(limits.in_flight.remote(name), timeout=30) == 2
    ray.kill(actor)
