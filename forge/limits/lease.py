"""A gateway replica's admission against leased tokens: decided locally while a lease
lasts (microseconds), with one round trip to the limiter when it runs dry.

A lease holds at most ``lease_size`` tokens for at most ``lease_ttl_s``; whatever is
unused when it expires goes back to the limiter. Concurrent requests that find a bucket
dry share one grant call; a refused grant says when the next token is due, and until
then this replica refuses without asking (so a flood costs the limiter nothing more).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from forge.limits.limiter import Grant

GrantCall = Callable[[str, int, int], Awaitable[Grant]]
GiveBack = Callable[[str, int, int], Awaitable[None]]
LEASE_TTL_S = 0.5


def lease_size(limit_per_min: int, replicas: int) -> int:
    """A tenth of a second's worth for each replica's share, at least one: small enough
    that leases idle elsewhere hold back little, large enough that a busy replica asks
    the limiter a few times a second, not per request."""
    return max(1, math.floor(limit_per_min / 60 / 10 / max(replicas, 1)))


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float = 0.0


@dataclass
class _Lease:
    tokens: int = 0
    expires: float = 0.0
    remaining: int = 0  # the bucket's, at the last grant
    reset_s: float = 0.0
    dry_until: float = 0.0  # refused by the limiter: refuse here until a token is due
    pending: asyncio.Future[Grant] | None = field(default=None, repr=False)


class LeasedAdmission:
    def __init__(
        self,
        grant: GrantCall,
        give_back: GiveBack,
        replicas: int = 1,
        lease_ttl_s: float = LEASE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grant = grant
        self._give_back = give_back
        self.replicas = replicas
        self.lease_ttl_s = lease_ttl_s
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self.round_trips = 0

    async def admit(self, name: str, limit_per_min: int) -> Decision:
        """One request against bucket ``name``: from the lease while it lasts, else
        after a grant; refused when the limiter has no token to grant."""
        lease = self._leases.setdefault(name, _Lease())
        while True:
            now = self._clock()
            if lease.tokens > 0 and now < lease.expires:
                lease.tokens -= 1
                remaining = lease.remaining + lease.tokens
                return Decision(True, limit_per_min, remaining, lease.reset_s)
            if now < lease.dry_until:  # no round trip while the bucket is known dry
                wait = lease.dry_until - now
                return Decision(False, limit_per_min, 0, lease.reset_s, wait)
            if lease.tokens > 0:  # expired unused: back to the bucket, then a fresh lease
                unused, lease.tokens = lease.tokens, 0
                await self._give_back(name, limit_per_min, unused)
            grant = await self._refill(name, limit_per_min, lease)
            if grant.granted == 0:
                return Decision(False, limit_per_min, 0, grant.reset_s, grant.retry_after_s)
            # granted: take from the lease (others sharing the grant may have emptied it,
            # then ask again)

    async def _refill(self, name: str, limit_per_min: int, lease: _Lease) -> Grant:
        if lease.pending is not None:  # someone is asking already: share the answer
            return await asyncio.shield(lease.pending)
        lease.pending = asyncio.get_running_loop().create_future()
        try:
            self.round_trips += 1
            grant = await self._grant(name, limit_per_min, lease_size(limit_per_min, self.replicas))
        except Exception as exc:
            lease.pending.set_exception(exc)
            lease.pending.exception()  # retrieved: each waiter raises it itself
            raise
        else:
            lease.tokens += grant.granted
            lease.expires = self._clock() + self.lease_ttl_s
            lease.dry_until = 0.0 if grant.granted else self._clock() + grant.retry_after_s
            lease.remaining, lease.reset_s = grant.remaining, grant.reset_s
            lease.pending.set_result(grant)
            return grant
        finally:
            lease.pending = None
