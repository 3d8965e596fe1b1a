"""Rate limits with leases, on a simulated clock (no wall-clock assertions): the bound on
any 60-second window holds however many replicas take leases, and the leases do not
starve the traffic they are meant to speed up."""

from __future__ import annotations

import asyncio

import pytest

from forge.limits.bucket import TokenBucket
from forge.limits.lease import LeasedAdmission, lease_size
from forge.limits.limiter import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_is_quantized_to_a_seconds_burst():
    bucket = TokenBucket.full(600, burst_s=1.0, now=0.0)
    assert bucket.capacity == 10 and bucket.rate == 10
    assert bucket.take(15, 0.0) == 10 and bucket.take(1, 0.0) == 0
    assert bucket.wait_s(0.0) == pytest.approx(0.1)
    assert bucket.take(15, 0.5) == 5
    assert TokenBucket.full(3, 1.0, 0.0).capacity == 1  # any limit admits something
    bucket.give_back(100, 0.5)
    assert bucket.level == bucket.capacity  # never above the burst


def limiter_and_replicas(clock: Clock, replicas: int) -> tuple[RateLimiter, list[LeasedAdmission]]:
    limiter = RateLimiter(burst_s=1.0, clock=clock)
    return limiter, [
        LeasedAdmission(limiter.grant, limiter.give_back, replicas=replicas, clock=clock)
        for _ in range(replicas)
    ]


async def test_four_replicas_hammering_one_key_stay_within_the_documented_bound():
    """600 requests a minute, 4 replicas each trying 5 requests every millisecond for two
    simulated minutes: no 60 s window admits more than 600 * (1 + 1/60) = 610, and the
    key gets at least 95% of what it may."""
    clock, limit = Clock(), 600
    _, replicas = limiter_and_replicas(clock, 4)
    start, admitted = clock.now, []
    for _ in range(120_000):  # 1 ms steps
        clock.now += 0.001
        for replica in replicas:
            for _ in range(5):
                if (await replica.admit("key:k1:rpm", limit)).allowed:
                    admitted.append(clock.now)
    for second in range(0, 61):
        lo = start + second
        in_window = sum(1 for t in admitted if lo <= t < lo + 60)
        assert in_window <= limit * (1 + 1 / 60), (second, in_window)
    assert len(admitted) >= 0.95 * limit * 2
    # The flood (2.4 million attempts) costs the limiter nothing: a replica refused by it
    # refuses locally until the next token is due, so the calls are bounded by the
    # limit's rate (here under two a token per replica), not by the traffic.
    trips = sum(r.round_trips for r in replicas)
    assert trips <= 2 * 4 * (limit / 60) * 120, trips
    assert lease_size(60_000, 4) == 25  # and at higher limits a call serves many requests


async def test_a_busy_replica_asks_a_few_times_a_second_not_per_request():
    clock = Clock()
    _, [replica] = limiter_and_replicas(clock, 1)
    allowed = 0
    for _ in range(10_000):  # 10 s at 1 request/ms, limit 60,000/min = 1,000/s
        clock.now += 0.001
        allowed += (await replica.admit("key:k2:rpm", 60_000)).allowed
    assert allowed >= 9_500 and replica.round_trips <= allowed / 50


async def test_a_refusal_says_when_to_retry_and_how_much_is_left():
    clock = Clock()
    _, [replica] = limiter_and_replicas(clock, 1)
    decisions = [await replica.admit("key:k3:rpm", 60) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, False, False]  # a 1-token burst
    refused = decisions[1]
    assert refused.retry_after_s == pytest.approx(1.0) and refused.remaining == 0
    assert refused.limit == 60 and refused.reset_s == pytest.approx(1.0)
    clock.now += 1.0
    assert (await replica.admit("key:k3:rpm", 60)).allowed


async def test_concurrent_requests_on_a_dry_lease_share_one_grant():
    calls = 0
    limiter = RateLimiter(burst_s=1.0)

    async def slow_grant(*args):
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return await limiter.grant(*args)

    replica = LeasedAdmission(slow_grant, limiter.give_back, replicas=1)
    decisions = await asyncio.gather(*(replica.admit("key:k4:rpm", 6_000) for _ in range(8)))
    # a lease of 10 covers all 8; the 2 left are under half a lease: one top-up follows
    assert all(d.allowed for d in decisions) and calls <= 2


async def test_unused_leases_go_back_and_a_changed_limit_starts_afresh():
    clock = Clock()
    limiter, (a, b) = limiter_and_replicas(clock, 2)
    assert (await a.admit("key:k5:rpm", 1200)).allowed  # a leases 1 of a burst of 20
    await asyncio.sleep(0)  # ...and tops its lease up in the background: it holds 1
    assert await a.sweep() == 0  # not idle yet
    clock.now += 1.0  # idle past the TTL
    assert await a.sweep() == 1  # given back
    granted = await limiter.grant("key:k5:rpm", 1200, 100)
    assert granted.granted == 20  # the bucket is whole again
    assert (await b.admit("key:k5:rpm", 30)).allowed  # a new limit: a fresh bucket


def test_a_request_bigger_than_the_burst_waits_for_a_full_bucket_and_leaves_debt():
    bucket = TokenBucket.full(60_000, burst_s=1.0, now=0.0)  # 1,000 tokens a second
    assert bucket.take(1, 0.0, need=4_000) == 4_000  # full: let through, 3,000 in debt
    assert bucket.level == -3_000
    assert bucket.take(1, 2.5, need=1) == 0  # the debt is paid back first
    assert bucket.wait_s(2.5, need=4_000) == pytest.approx(1.5)  # until full again
    assert bucket.take(2_000, 4.0, need=500) == 1_000  # a normal need: what there is


async def test_tokens_are_admitted_by_cost_and_settled_by_charges():
    """Tokens per minute: a request costs its estimate; the real count is charged from
    the lease afterwards, so the bucket ends up debited by what was really spent."""
    clock = Clock()
    limiter, [replica] = limiter_and_replicas(clock, 1)
    name, limit = "project:p1:m:tpm", 6_000  # 100 tokens a second
    assert (await replica.admit(name, limit, cost=60)).allowed
    replica.charge(name, 90)  # the answer was 90 tokens longer than estimated
    refused = await replica.admit(name, limit, cost=60)  # the debt went back with the ask:
    assert not refused.allowed  # 100 - 150 spent = -50, 60 needed: 1.1 s
    assert refused.retry_after_s == pytest.approx(1.1)
    clock.now += 1.1  # -50 + 110 = 60
    assert (await replica.admit(name, limit, cost=40)).allowed
    assert not (await replica.admit(name, limit, cost=40)).allowed  # 20 left
    replica.refund(name, 40)  # refused by another limit: the tokens come back
    assert (await replica.admit(name, limit, cost=40)).allowed  # from the lease
    replica.charge(name, 25)  # a debt in an idle lease...
    await asyncio.sleep(0)  # (its background top-up done)
    clock.now += 1.0
    assert await replica.sweep() == 1  # ...goes back to the bucket
    assert (await limiter.grant(name, limit, 100)).granted < 100


async def test_a_day_limit_is_a_quota_of_its_whole_day():
    clock = Clock()
    _, [replica] = limiter_and_replicas(clock, 1)
    day = 86_400.0
    admitted = [(await replica.admit("key:k6:rpd", 5, period_s=day)).allowed for _ in range(8)]
    assert admitted == [True] * 5 + [False] * 3
    refused = await replica.admit("key:k6:rpd", 5, period_s=day)
    assert refused.retry_after_s == pytest.approx(day / 5, rel=0.01)


async def test_an_unreachable_limiter_admits_for_a_while_then_is_asked_again():
    clock, calls = Clock(), 0

    async def down(*args):
        nonlocal calls
        calls += 1
        raise ConnectionError("restarting")

    replica = LeasedAdmission(down, down, replicas=1, clock=clock)
    decisions = [await replica.admit("key:k7:rpm", 60) for _ in range(5)]
    assert all(d.allowed for d in decisions) and calls == 1  # fails open, asks once
    clock.now += 1.5
    assert (await replica.admit("key:k7:rpm", 60)).allowed and calls == 2
