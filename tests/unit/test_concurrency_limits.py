"""Limits on the requests in flight at once: permits held by gateway replicas from the
RateLimiter (never more in flight than the limit, across replicas), freed when a request
ends however it ends, taken back from a replica that stopped reporting, relearned by a
restarted limiter; through the gateway, a 429 naming the limit."""

from __future__ import annotations

import asyncio
import random

import openai
import pytest

from forge.limits.concurrency import ConcurrencyLeases
from forge.limits.limiter import RateLimiter
from forge.limits.permits import HOLDER_TTL_S, Permits
from tests.unit.harness import in_process_gateway, platform_config
from tests.unit.test_tenancy import call, populated


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def leases(limiter: RateLimiter, holder: str, clock=None) -> ConcurrencyLeases:
    kw = {"clock": clock} if clock is not None else {}
    return ConcurrencyLeases(limiter.acquire, limiter.release, limiter.report, holder, **kw)


def test_permits_are_never_in_two_places():
    permits = Permits(Clock())
    assert permits.acquire("c", 3, "a", want=2).granted == 2
    grant = permits.acquire("c", 3, "b", want=2)
    assert (grant.granted, grant.free) == (1, 0)
    assert permits.acquire("c", 3, "b").granted == 0
    permits.release("c", "a", 1)
    assert permits.acquire("c", 3, "b").granted == 1 and permits.in_flight("c") == 3
    permits.acquire("c", 2, "a")  # a lowered limit applies as permits come back
    permits.release("c", "a", 1)
    assert permits.in_flight("c") == 2 and permits.acquire("c", 2, "a").granted == 0


def test_a_silent_holders_permits_are_taken_back_and_a_restart_relearns_them():
    clock = Clock()
    permits = Permits(clock)
    assert permits.acquire("c", 2, "dead", want=2).granted == 2
    clock.now += HOLDER_TTL_S / 2
    assert permits.acquire("c", 2, "alive").granted == 0  # not silent long enough
    clock.now += HOLDER_TTL_S
    assert permits.acquire("c", 2, "alive").granted == 1  # the dead replica's went back

    restarted = Permits(clock)
    restarted.report("alive", {"c": (2, 1)})
    restarted.report("other", {"c": (2, 1)})
    assert restarted.acquire("c", 2, "third").granted == 0 and restarted.in_flight("c") == 2
    restarted.report("other", {"c": (2, 0)})
    assert restarted.acquire("c", 2, "third").granted == 1


async def test_a_replica_admits_locally_with_the_permits_it_holds_and_gives_idle_ones_back():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    replica = leases(limiter, "r1", clock)
    assert (await replica.enter("c", 2)).allowed
    replica.exit("c")
    trips = replica.round_trips
    for _ in range(5):  # the freed permit serves the next request here, no round trip
        assert (await replica.enter("c", 2)).allowed
        replica.exit("c")
    assert replica.round_trips == trips == 1
    assert await limiter.in_flight("c") == 1  # held, idle, by this replica
    other = leases(limiter, "r2", clock)
    assert (await other.enter("c", 2)).allowed
    refused = await other.enter("c", 2)
    assert not refused.allowed and refused.retry_after_s >= 1
    clock.now += replica.idle_s
    assert await replica.sweep() == 1 and await limiter.in_flight("c") == 1
    clock.now += 1
    assert (await other.enter("c", 2)).allowed  # the idle permit went back, and came here


async def test_an_unreachable_limiter_admits_without_permits_and_exit_keeps_count():
    async def down(*_):
        raise ConnectionError("restarting")

    replica = ConcurrencyLeases(down, down, down, "r")
    entry = await replica.enter("c", 1)
    assert entry.allowed and not entry.backed
    assert (await replica.enter("c", 1)).allowed  # open for a while, without asking
    replica.exit("c")  # nothing backed: nothing to free
    assert replica.in_use("c") == 0
    await replica.sweep()  # a failing report is logged, not raised


async def test_four_replicas_never_have_more_in_flight_than_the_limit():
    """Four replicas, one limiter, 400 requests of random length from 40 callers, the
    sweepers running: the requests in flight at once never exceed the limit, and every
    permit is back at the end."""
    limiter = RateLimiter()
    replicas = [leases(limiter, f"r{i}") for i in range(4)]
    for r in replicas:
        r.idle_s = 0.01
    limit, in_flight, peak, admitted = 5, 0, 0, 0

    async def caller(seed: int) -> None:
        nonlocal in_flight, peak, admitted
        rng = random.Random(seed)
        for _ in range(10):
            replica = rng.choice(replicas)
            entry = await replica.enter("key:k:*:concurrent", limit)
            if not entry.allowed:
                await asyncio.sleep(rng.random() / 200)
                continue
            in_flight += 1
            admitted += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(rng.random() / 100)
            in_flight -= 1
            replica.exit("key:k:*:concurrent")

    sweepers = [asyncio.create_task(r.run_sweeper()) for r in replicas]
    await asyncio.gather(*(caller(i) for i in range(40)))
    await asyncio.sleep(0.05)
    for task in sweepers:
        task.cancel()
    assert peak == limit and admitted > limit  # the limit was reached, and held
    assert await limiter.in_flight("key:k:*:concurrent") == 0


# ---------------------------------------------------------------------- through the gateway


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def test_a_keys_concurrent_requests_are_limited_and_freed_however_they_end(gw):
    org = await populated(gw, "concurrency")
    limit = {"scope": "key", "subject_id": org.user_id, "max_concurrent_requests": 2}
    set_ = await call(gw, "PUT", "/admin/rate_limits", org.admin, json=limit)
    assert set_.status_code == 200, set_.text
    assert set_.json()["max_concurrent_requests"] == 2
    client = gw.sdk(org.user)
    msg = [{"role": "user", "content": "hi"}]
    # answers, upstream errors and refusals each free their permit
    for model in ("gpt-test", "error-400", "gpt-test", "error-500", "gpt-test"):
        try:
            await client.chat.completions.create(model=model, messages=msg)
        except openai.APIStatusError as exc:
            assert exc.status_code != 429, exc

    async def slow() -> None:
        stream = await client.chat.completions.create(
            model="slow-stream-inproc", messages=msg, stream=True
        )
        async for _ in stream:
            pass

    name = f"key:{org.user_id}:*:concurrent"
    in_flight = [asyncio.create_task(slow()) for _ in range(2)]
    for _ in range(100):
        if gw.runtime.admission.concurrency.in_use(name) == 2:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(openai.RateLimitError) as refused:
        await client.chat.completions.create(model="gpt-test", messages=msg)
    body = refused.value.body
    assert body["code"] == "rate_limit_exceeded" and "concurrent requests" in body["message"]
    assert "Limit 2" in body["message"] and org.user_id in body["message"]
    assert int(refused.value.response.headers["retry-after"]) >= 1
    for task in in_flight:  # clients that leave mid-stream free their permits too
        task.cancel()
    await asyncio.gather(*in_flight, return_exceptions=True)
    assert gw.runtime.admission.concurrency.in_use(name) == 0
    assert (await client.chat.completions.create(model="gpt-test", messages=msg)).choices
    streamed = [
        c
        async for c in await client.chat.completions.create(
            model="gpt-test", messages=msg, stream=True
        )
    ]
    assert streamed
    assert gw.runtime.admission.concurrency.in_use(name) == 0


async def test_a_bad_concurrency_limit_is_refused_naming_it(gw):
    org = await populated(gw, "concurrency-bad")
    for value in (0, -1, "two", 2**31):
        body = {"scope": "key", "subject_id": org.user_id, "max_concurrent_requests": value}
        resp = await call(gw, "PUT", "/admin/rate_limits", org.admin, json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == "max_concurrent_requests"
