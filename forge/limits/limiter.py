"""The authoritative rate-limit buckets: what the control plane's limits facet holds.

Replicas do not ask per request: they take leases (``grant``) of a few tokens and admit
locally until a lease is spent (``forge.limits.lease``). Tokens leave the bucket when
granted, so leases can never admit more than the bucket holds: the only bound on a
window is the bucket's own (``TokenBucket``). Unused tokens come back when a lease
expires (``give_back``), so leases idle on one replica do not starve another for long.

In memory on purpose: a restarted limiter starts full, which admits at most one extra
burst (``limit * burst_s / 60``, a second's worth by default) per restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel

from forge.limits.bucket import MINUTE_S, TokenBucket
from forge.limits.permits import PermitGrant, Permits

BURST_S = 1.0
MAX_BUCKETS = 100_000  # buckets idle long enough to be full are dropped past this


class Grant(BaseModel):
    granted: int  # tokens the lease holds (0: refused)
    remaining: int  # tokens left in the bucket after this grant
    retry_after_s: float  # when refused: until one token is there
    reset_s: float  # until the bucket is full again (OpenAI's x-ratelimit-reset-*)


class RateLimiter:
    def __init__(
        self, burst_s: float = BURST_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst_s = burst_s
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._permits = Permits(clock)

    def _bucket(self, name: str, limit: int, period_s: float, now: float) -> TokenBucket:
        bucket = self._buckets.get(name)
        if bucket is None or bucket.limit != limit or bucket.period_s != period_s:
            # a changed limit starts from its own full burst; a limit per day bursts its
            # whole day (a daily quota, not a rate)
            burst_s = self.burst_s if period_s <= MINUTE_S else period_s
            bucket = TokenBucket.full(limit, burst_s, now, period_s)
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_full(now)
            self._buckets[name] = bucket
        return bucket

    async def grant(
        self,
        name: str,
        limit: int,
        want: int,
        need: int = 1,
        period_s: float = MINUTE_S,
        returned: int = 0,
    ) -> Grant:
        """Up to ``want`` tokens of bucket ``name`` (``limit`` requests or tokens per
        ``period_s``), if it has the ``need`` that the asking request must have; first
        taking back what the asking lease ``returned`` (negative: spent beyond it)."""
        now = self._clock()
        bucket = self._bucket(name, limit, period_s, now)
        if returned:
            bucket.give_back(returned, now)
        granted = bucket.take(max(want, need), now, need)
        return Grant(
            granted=granted,
            remaining=max(0, int(bucket.level)),
            retry_after_s=0.0 if granted else bucket.wait_s(now, need),
            reset_s=bucket.until_full_s(now),
        )

    async def give_back(
        self, name: str, limit: int, tokens: int, period_s: float = MINUTE_S
    ) -> None:
        """An expired lease's unused tokens, or (negative) what it spent beyond them."""
        if tokens:
            now = self._clock()
            self._bucket(name, limit, period_s, now).give_back(tokens, now)

    async def acquire(self, name: str, limit: int, holder: str, want: int = 1) -> PermitGrant:
        """Up to ``want`` permits of the concurrent-requests limit ``name`` for the
        replica ``holder`` (forge.limits.permits)."""
        return self._permits.acquire(name, limit, holder, want)

    async def release(self, name: str, holder: str, permits: int) -> None:
        self._permits.release(name, holder, permits)

    async def report(self, holder: str, holdings: dict[str, tuple[int, int]]) -> None:
        """A replica's heartbeat and the permits it holds."""
        self._permits.report(holder, holdings)

    async def in_flight(self, name: str) -> int:
        return self._permits.in_flight(name)

    def _drop_full(self, now: float) -> None:
        for name in [n for n, b in self._buckets.items() if b.until_full_s(now) <= 0]:
            del self._buckets[name]
