"""A gateway replica's admission against leased tokens: decided locally while the lease
holds enough (about a microsecond), with a round trip to the limiter only when it does
not.

A lease is topped up in the background when it runs low (below half a lease), so a busy
replica rarely waits for the limiter; concurrent requests that find a lease empty share
one grant call. A refused grant says when the next token is due, and until then this
replica refuses without asking (so a flood costs the limiter nothing more). Tokens a
lease has held unused for ``lease_ttl_s`` go back to the limiter (``sweep``, run in the
background by the gateway), so leases idle on one replica do not starve another.

Tokens leave the limiter's bucket when granted, so leases never add to what a window
admits, however long a lease keeps them. A request costs ``cost`` tokens (1 for
requests, an estimate for tokens); ``charge`` settles the difference once the real
count is known, from the lease (it may go below zero: the debt goes back with the
sweep, or is covered by the next grant). While the limiter cannot be reached (an actor
restarting), a bucket admits without it for ``UNREACHABLE_S`` at a time: rate limits
fail open, budgets fail closed.
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
GiveBack = Callable[[str, int, int, float], Awaitable[None]]
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
    used: float = 0.0  # when it last admitted or was granted (idle past the TTL: swept)
    remaining: int = 0  # the bucket's, at the last grant
    reset_s: float = 0.0
    dry_until: float = 0.0  # refused by the limiter: refuse here until a token is due
    open_until: float = 0.0  # the limiter unreachable: admit without it until then
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
        self._tasks: set[asyncio.Task[None]] = set()
        self.round_trips = 0

    async def admit(
        self, name: str, limit: int, cost: int = 1, period_s: float = MINUTE_S
    ) -> Decision:
        """One request costing ``cost`` tokens of bucket ``name`` (``limit`` per
        ``period_s``): from the lease when it holds enough, else after a grant; refused
        when the limiter has not got the tokens."""
        lease = self._leases.get(name)
        if lease is None or lease.limit != limit or lease.period_s != period_s:
            lease = self._leases[name] = _Lease(limit, period_s)  # a changed limit: afresh
        while True:
            now = self._clock()
            if lease.tokens >= cost:
                lease.tokens -= cost
                lease.used = now
                if lease.pending is None and lease.tokens * 2 < self._size(lease):
                    self._ask(name, lease, 1, returning=False)  # top up in the background
                return Decision(True, limit, lease.remaining + lease.tokens, lease.reset_s)
            if now < lease.dry_until and lease.tokens <= 0:  # known dry: no round trip
                wait = lease.dry_until - now
                return Decision(False, limit, 0, lease.reset_s, wait)
            if now < lease.open_until:
                return Decision(True, limit, limit, 0.0)
            try:
                grant = await asyncio.shield(self._ask(name, lease, cost, returning=True))
            except Exception as exc:
                log.warning("rate limiter unreachable (%s): admitting", type(exc).__name__)
                lease.open_until = self._clock() + UNREACHABLE_S
                return Decision(True, limit, limit, 0.0)
            if grant.granted == 0 and lease.tokens < cost:
                return Decision(False, limit, 0, grant.reset_s, grant.retry_after_s)
            # granted: take from the lease (others sharing the grant may have emptied it,
            # or it was a top-up too small for this request: then ask again)

    def refund(self, name: str, tokens: int) -> None:
        """Give ``tokens`` back to the lease (a request admitted here, then refused by
        another of its limits); positive or negative, like ``charge``."""
        lease = self._leases.get(name)
        if lease is not None:
            lease.tokens += tokens

    def charge(self, name: str, tokens: int) -> None:
        """``tokens`` more spent than admitted (negative: fewer), settled from the lease."""
        self.refund(name, -tokens)

    async def sweep(self) -> int:
        """Give back what leases idle for ``lease_ttl_s`` hold (or owe); how many."""
        now, swept = self._clock(), 0
        for name, lease in list(self._leases.items()):
            if now - lease.used < self.lease_ttl_s or lease.pending is not None:
                continue
            held, lease.tokens = lease.tokens, 0
            del self._leases[name]
            if held:
                try:
                    await self._give_back(name, lease.limit, held, lease.period_s)
                    swept += 1
                except Exception as exc:  # tokens lost to the limiter's restart anyway
                    log.warning("giving back a lease failed: %s", type(exc).__name__)
        return swept

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl_s)
            await self.sweep()

    def _size(self, lease: _Lease) -> int:
        return lease_size(lease.limit, self.replicas, lease.period_s)

    def _ask(self, name: str, lease: _Lease, need: int, returning: bool) -> asyncio.Future[Grant]:
        """A grant call for at least ``need`` (a lease's size if more), or the one
        already under way, whose answer every caller shares. ``returning``: what the
        lease holds (too little for a request, or a debt) goes back in the same call, so
        the bucket decides on the whole truth (a top-up keeps it)."""
        if lease.pending is None:
            returned = 0
            if returning:
                returned, lease.tokens = lease.tokens, 0
            loop = asyncio.get_running_loop()
            lease.pending = loop.create_future()
            task = loop.create_task(self._call(name, lease, need, returned, lease.pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return lease.pending

    async def _call(
        self, name: str, lease: _Lease, need: int, returned: int, answer: asyncio.Future[Grant]
    ) -> None:
        try:
            self.round_trips += 1
            want = max(need, self._size(lease))
            grant = await self._grant(name, lease.limit, want, need, lease.period_s, returned)
        except Exception as exc:
            lease.tokens += returned  # not returned after all
            answer.set_exception(exc)
            answer.exception()  # retrieved: each waiter raises it itself
        else:
            now = self._clock()
            lease.tokens += grant.granted
            lease.used = now
            lease.dry_until = 0.0 if grant.granted else now + grant.retry_after_s
            lease.remaining, lease.reset_s = grant.remaining, grant.reset_s
            answer.set_result(grant)
        finally:
            lease.pending = None
