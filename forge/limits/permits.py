"""Permits for the requests in flight at once: the limits facet's side.

A limit on concurrent requests is a semaphore shared by every gateway replica. Replicas
hold permits (``acquire``), admit locally while a request can have one of theirs, and
give back what they have held idle (``release``), so no more than ``limit`` requests are
ever in flight: permits are never in two places.

The pools are in memory, like the token buckets. A replica's ``report`` (its sweeper
sends one every half second while it holds any) is both its heartbeat and its truth: a
restarted limiter learns what every live replica holds within one report, and a
replica that stopped reporting (killed) has its permits taken back after
``HOLDER_TTL_S``. So the bound holds always but for the half second after a limiter
restart, and a killed replica costs the others its permits for a few seconds, never
more requests than the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

HOLDER_TTL_S = 5.0
RETRY_AFTER_S = 1.0  # a permit frees when some request ends, which nothing can foretell


class PermitGrant(BaseModel):
    granted: int
    free: int  # permits left in the pool after this grant


@dataclass
class _Pool:
    limit: int
    held: dict[str, int] = field(default_factory=dict)  # holder → permits

    @property
    def free(self) -> int:
        return self.limit - sum(self.held.values())


class Permits:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pools: dict[str, _Pool] = {}
        self._seen: dict[str, float] = {}  # holder → when last heard from

    def acquire(self, name: str, limit: int, holder: str, want: int = 1) -> PermitGrant:
        now = self._clock()
        self._seen[holder] = now
        pool = self._pools.setdefault(name, _Pool(limit))
        pool.limit = limit  # a changed limit applies as permits come back
        if pool.free < want:
            self._reclaim(pool, now)
        granted = max(0, min(want, pool.free))
        if granted:
            pool.held[holder] = pool.held.get(holder, 0) + granted
        return PermitGrant(granted=granted, free=max(0, pool.free))

    def release(self, name: str, holder: str, permits: int) -> None:
        self._seen[holder] = self._clock()
        pool = self._pools.get(name)
        if pool is None:
            return
        left = pool.held.get(holder, 0) - permits
        if left > 0:
            pool.held[holder] = left
        else:
            pool.held.pop(holder, None)
        if not pool.held:
            del self._pools[name]

    def report(self, holder: str, holdings: dict[str, tuple[int, int]]) -> None:
        """What ``holder`` holds now (name → (limit, permits)), for the names it has no
        acquire under way for: sent after its releases, so it is the whole truth."""
        self._seen[holder] = self._clock()
        for name, (limit, held) in holdings.items():
            pool = self._pools.setdefault(name, _Pool(limit))
            pool.limit = limit
            if held > 0:
                pool.held[holder] = held
            else:
                pool.held.pop(holder, None)

    def in_flight(self, name: str) -> int:
        pool = self._pools.get(name)
        return 0 if pool is None else sum(pool.held.values())

    def _reclaim(self, pool: _Pool, now: float) -> None:
        """Take back the permits of holders not heard from for ``HOLDER_TTL_S``."""
        for holder in list(pool.held):
            if now - self._seen.get(holder, 0.0) > HOLDER_TTL_S:
                del pool.held[holder]
