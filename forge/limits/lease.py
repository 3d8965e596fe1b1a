"""A gateway replica's admission against leased tokens: decided locally while a lease
lasts (microseconds), with one round trip to the limiter when it runs dry.

A lease holds at most ``lease_size`` tokens for at most ``lease_ttl_s``; whatever it
holds when it expires, or when it holds too few for a request, goes back to the limiter
with the next grant call. Concurrent requests that find a bucket
dry share one grant call; a refused grant says when the next token is due, and until
then this replica refuses without asking (so a flood costs the limiter nothing more).

Tokens leave the limiter's bucket when granted, so leases never add to what a window
admits. A request costs ``cost`` tokens (1 for requests, an estimate for tokens);
``charge`` settles the difference once the real count is known, from the lease (it may
go below zero: the debt goes back with the lease). While the limiter cannot be reached
(an actor restarting), a bucket admits without it for ``UNREACHABLE_S`` at a time: rate
limits fail open, budgets (forge.budgets) fail closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from forge.limits.bucket import MINUTE_S
from forge.limits.limiter import Grant

log = logging.getLogger(__name__)
GrantCall = Callable[[str, int, int, int, float, int], Awaitable[Grant]]
LEASE_TTL_S = 0.5
LEASE_SPAN_S = 0.1  # a lease holds this long's worth of a replica's share
UNREACHABLE_S = 1.0


def lease_size(limit: int, replicas: int, period_s: float = MINUTE_S) -> int:
    """A tenth of a second's worth for each replica's share, at least one: small enough
    that leases idle elsewhere hold back little, large enough that a busy replica asks
    the limiter a few times a second, not per request."""
    return max(1, math.floor(limit / period_s * LEASE_SPAN_S / max(replicas, 1)))


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float = 0.0


@dataclass
class _Lease:
    limit: int = 0
    period_s: float = MINUTE_S
    tokens: int = 0  # below zero: spent beyond the grant (charged after the fact)
    expires: float = 0.0
    remaining: int = 0  # the bucket's, at the last grant
    reset_s: float = 0.0
    dry_until: float = 0.0  # refused by the limiter: refuse here until a token is due
    open_until: float = 0.0  # the limiter unreachable: admit without it until then
    pending: asyncio.Future[Grant] | None = field(default=None, repr=False)


class LeasedAdmission:
    def __init__(
        self,
        grant: GrantCall,
        replicas: int = 1,
        lease_ttl_s: float = LEASE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grant = grant
        self.replicas = replicas
        self.lease_ttl_s = lease_ttl_s
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self.round_trips = 0

    async def admit(
        self, name: str, limit: int, cost: int = 1, period_s: float = MINUTE_S
    ) -> Decision:
        """One request costing ``cost`` tokens of bucket ``name`` (``limit`` per
        ``period_s``): from the lease while it lasts, else after a grant; refused when the
        limiter has not got the tokens."""
        lease = self._leases.get(name)
        if lease is None or lease.limit != limit or lease.period_s != period_s:
            lease = self._leases[name] = _Lease(limit, period_s)  # a changed limit: afresh
        while True:
            now = self._clock()
            if lease.tokens >= cost and now < lease.expires:
                lease.tokens -= cost
                return Decision(True, limit, lease.remaining + lease.tokens, lease.reset_s)
            if now < lease.dry_until:  # no round trip while the bucket is known dry
                wait = lease.dry_until - now
                return Decision(False, limit, 0, lease.reset_s, wait)
            if now < lease.open_until:
                return Decision(True, limit, limit, 0.0)
            try:
                grant = await self._refill(name, lease, cost)
            except Exception as exc:
                log.warning("rate limiter unreachable (%s): admitting", type(exc).__name__)
                lease.open_until = self._clock() + UNREACHABLE_S
                return Decision(True, limit, limit, 0.0)
            if grant.granted == 0:
                return Decision(False, limit, 0, grant.reset_s, grant.retry_after_s)
            # granted: take from the lease (others sharing the grant may have emptied it,
            # then ask again)

    def refund(self, name: str, tokens: int) -> None:
        """Give ``tokens`` back to the lease (a request admitted here, then refused by
        another of its limits); positive or negative, like ``charge``."""
        lease = self._leases.get(name)
        if lease is not None:
            lease.tokens += tokens

    def charge(self, name: str, tokens: int) -> None:
        """``tokens`` more spent than admitted (negative: fewer), settled from the lease."""
        self.refund(name, -tokens)

    async def _refill(self, name: str, lease: _Lease, need: int) -> Grant:
        """A fresh lease: what this one holds goes back (all the bucket's for a request
        bigger than the lease), ``need`` or a lease's size comes out, in one call."""
        if lease.pending is not None:  # someone is asking already: share the answer
            return await asyncio.shield(lease.pending)
        lease.pending = asyncio.get_running_loop().create_future()
        returned, lease.tokens = lease.tokens, 0
        try:
            self.round_trips += 1
            want = max(need, lease_size(lease.limit, self.replicas, lease.period_s))
            grant = await self._grant(name, lease.limit, want, need, lease.period_s, returned)
        except Exception as exc:
            lease.tokens += returned  # not returned after all
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
