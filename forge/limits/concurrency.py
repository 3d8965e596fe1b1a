"""A gateway replica's admission against limits on the requests in flight at once.

The replica holds permits from the control plane's limits facet (``forge.limits.permits``) and
admits locally while one of its permits is free: a request that ends frees its permit
here, for the next request on this replica, with no round trip. A request that finds
none asks the actor for one. Permits held idle for ``idle_s`` go back to the actor
(``sweep``, every ``idle_s`` in the background), so a replica that was busy does not
starve the others for long; the same sweep reports what the replica holds (its
heartbeat). While the actor cannot be reached, requests are admitted without a permit
for ``UNREACHABLE_S`` at a time (rate limits fail open; budgets fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from forge.limits.permits import RETRY_AFTER_S, PermitGrant

log = logging.getLogger(__name__)
Acquire = Callable[[str, int, str, int], Awaitable[PermitGrant]]
Release = Callable[[str, str, int], Awaitable[None]]
Report = Callable[[str, dict[str, tuple[int, int]]], Awaitable[None]]
IDLE_S = 0.5
UNREACHABLE_S = 1.0
REFUSED_S = 0.05  # after a refusal, refuse here without asking for this long


@dataclass(slots=True)
class Entry:
    """The answer for one request: admitted or not, and whether a permit backs it."""

    allowed: bool
    limit: int
    backed: bool = False
    retry_after_s: float = 0.0


@dataclass
class _Slots:
    limit: int
    held: int = 0  # permits the actor counts as this replica's
    in_use: int = 0  # held by requests in flight here
    asking: int = 0  # acquire calls under way
    used: float = 0.0  # last entry or exit
    dry_until: float = 0.0
    open_until: float = 0.0


class ConcurrencyLeases:
    def __init__(
        self,
        acquire: Acquire,
        release: Release,
        report: Report,
        holder: str,
        idle_s: float = IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._acquire = acquire
        self._release = release
        self._report = report
        self.holder = holder
        self.idle_s = idle_s
        self._clock = clock
        self._slots: dict[str, _Slots] = {}
        self.round_trips = 0

    async def enter(self, name: str, limit: int) -> Entry:
        """One request in flight under ``name`` (at most ``limit`` across replicas)."""
        slots = self._slots.get(name)
        if slots is None:
            slots = self._slots[name] = _Slots(limit)
        slots.limit = limit
        now = self._clock()
        slots.used = now
        if slots.in_use < slots.held:
            slots.in_use += 1
            return Entry(True, limit, backed=True)
        if now < slots.dry_until:
            return Entry(False, limit, retry_after_s=RETRY_AFTER_S)
        if now < slots.open_until:
            return Entry(True, limit)
        slots.asking += 1
        try:
            self.round_trips += 1
            grant = await self._acquire(name, limit, self.holder, 1)
        except Exception as exc:
            log.warning("rate limiter unreachable (%s): admitting", type(exc).__name__)
            slots.open_until = self._clock() + UNREACHABLE_S
            return Entry(True, limit)
        finally:
            slots.asking -= 1
        slots.held += grant.granted
        if not grant.granted:
            slots.dry_until = self._clock() + REFUSED_S
            return Entry(False, limit, retry_after_s=RETRY_AFTER_S)
        slots.in_use += 1
        return Entry(True, limit, backed=True)

    def exit(self, name: str) -> None:
        """A request backed by a permit of ``name`` ended: the permit is free here."""
        slots = self._slots.get(name)
        if slots is not None and slots.in_use > 0:
            slots.in_use -= 1
            slots.used = self._clock()
            slots.dry_until = 0.0  # a permit is free here now

    def in_use(self, name: str) -> int:
        slots = self._slots.get(name)
        return 0 if slots is None else slots.in_use

    async def sweep(self) -> int:
        """Give back permits held idle for ``idle_s``, then report what is held; how
        many permits went back."""
        now, returned = self._clock(), 0
        for name, slots in list(self._slots.items()):
            spare = slots.held - slots.in_use
            if spare <= 0 or now - slots.used < self.idle_s:
                continue
            slots.held -= spare
            try:
                await self._release(name, self.holder, spare)
                returned += spare
            except Exception as exc:  # the report below, or a restarted actor, settles it
                log.warning("giving back permits failed: %s", type(exc).__name__)
            if slots.held == 0 and slots.in_use == 0 and slots.asking == 0:
                del self._slots[name]
        holdings = {
            name: (slots.limit, slots.held)
            for name, slots in self._slots.items()
            if slots.asking == 0 and slots.held > 0
        }
        if holdings:
            try:
                await self._report(self.holder, holdings)
            except Exception as exc:
                log.warning("reporting permits failed: %s", type(exc).__name__)
        return returned

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.idle_s)
            await self.sweep()
