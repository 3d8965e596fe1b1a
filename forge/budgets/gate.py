"""A gateway replica's admission against budgets: from its holds, locally, at each
request's worst-case cost; a round trip to the ledger only when a hold cannot cover it.

A hold is the replica's allowance on one budget. A request reserves its worst case on
each of its budgets' current holds; settling moves the worst case to the real cost, so
the rest of the hold is free again. A hold too small for a request is retired (a fresh
one comes from the ledger, all of the request's short budgets in one call), and given
back once nothing it covers is in flight and the usage shipper has delivered the records
(``flushed``): never before the money shows in the spend counters.

Budgets fail closed: when the ledger cannot be reached, a request its holds cannot cover
is refused with a 503 to retry, not let through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from forge.budgets.ledger import Ask, Reservation
from forge.budgets.model import Budget, Costs, Unit, refusal
from forge.errors import ServiceUnavailable

log = logging.getLogger(__name__)
ReserveCall = Callable[[list[Ask], list[str]], Awaitable[Reservation]]
ReleaseCall = Callable[[list[str]], Awaitable[int]]
Flushed = Callable[[], Awaitable[bool]]
HOLD_SHARE = 0.01  # a hold asks for this share of its budget (the ledger may give less)
IDLE_S = 5.0  # a hold unused this long is given back


@dataclass
class _Allowance:
    hold_id: str
    amount: float
    reserved: float = 0.0  # worst cases of the requests in flight
    used: float = 0.0  # real costs of those settled
    in_flight: int = 0
    touched: float = field(default_factory=time.monotonic)

    @property
    def free(self) -> float:
        return self.amount - self.reserved - self.used


@dataclass(slots=True)
class BudgetAdmitted:
    """What one request took from its holds, to settle with its real cost."""

    taken: list[tuple[_Allowance, Unit, float]]  # allowance, unit, worst case

    def settle(self, real: Costs) -> None:
        for allowance, unit, worst in self.taken:
            allowance.reserved -= worst
            allowance.used += real.of(unit)
            allowance.in_flight -= 1
        self.taken = []


class BudgetGate:
    def __init__(
        self,
        reserve: ReserveCall,
        release: ReleaseCall,
        flushed: Flushed,
        replicas: int = 1,
        clock: Callable[[], float] = time.monotonic,
        expire: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self._reserve = reserve
        self._release = release
        self._flushed = flushed
        self._expire = expire
        self.replicas = replicas
        self._clock = clock
        self._current: dict[str, _Allowance] = {}
        self._retired: list[_Allowance] = []
        self.round_trips = 0

    async def admit(self, budgets: Sequence[Budget], worst: Costs) -> BudgetAdmitted | None:
        """Reserve ``worst`` on every budget, or raise: ``QuotaExceeded`` (429) naming
        the budget that is spent, ``ServiceUnavailable`` (503) while the ledger is away."""
        if not budgets:
            return None
        while True:
            short = [b for b in budgets if self._cover(b, worst) is None]
            if not short:
                break
            await self._top_up(short, worst)
        taken: list[tuple[_Allowance, Unit, float]] = []
        now = self._clock()
        for b in budgets:
            allowance = self._cover(b, worst)
            if allowance is None:  # another request took it meanwhile: go round again
                for a, _, w in taken:
                    a.reserved -= w
                    a.in_flight -= 1
                return await self.admit(budgets, worst)
            w = worst.of(b.unit)
            allowance.reserved += w
            allowance.in_flight += 1
            allowance.touched = now
            taken.append((allowance, b.unit, w))
        return BudgetAdmitted(taken)

    def _cover(self, budget: Budget, worst: Costs) -> _Allowance | None:
        allowance = self._current.get(budget.id)
        if allowance is not None and allowance.free + 1e-12 >= worst.of(budget.unit):
            return allowance
        return None

    async def _top_up(self, short: list[Budget], worst: Costs) -> None:
        asks = [
            Ask(
                budget=b,
                need=worst.of(b.unit),
                want=max(worst.of(b.unit), b.limit * HOLD_SHARE / max(self.replicas, 1)),
            )
            for b in short
        ]
        # Holds with nothing in flight go back in the same call, once their records are
        # written: the ledger then counts their money once (in the spend counters), not
        # twice, which would refuse a small budget before it is spent.
        giving = [a for a in self._retired if a.in_flight == 0]
        giving += [
            a for b in short if (a := self._current.get(b.id)) is not None and a.in_flight == 0
        ]
        if giving and not await self._flushed():
            giving = []
        self.round_trips += 1
        try:
            answer = await self._reserve(asks, [a.hold_id for a in giving])
        except Exception as exc:
            log.warning("budget ledger unreachable (%s): refusing", type(exc).__name__)
            raise ServiceUnavailable(
                "The budget ledger is restarting; this request was not run. Retry shortly.",
                retry_after=1,
            ) from None
        given = {id(a) for a in giving}  # the ledger dropped them, granted or not
        self._retired = [a for a in self._retired if id(a) not in given]
        for budget in short:
            old = self._current.get(budget.id)
            if old is not None and id(old) in given:
                del self._current[budget.id]
        if answer.refused is not None:
            raise refusal(answer.refused, answer.spent)
        for budget, hold in zip(short, answer.holds, strict=True):
            old = self._current.get(budget.id)
            if old is not None:
                self._retired.append(old)
            self._current[budget.id] = _Allowance(hold.id, hold.amount)

    async def give_back(self, force: bool = False) -> int:
        """Give back the holds retired or idle for ``IDLE_S`` with nothing in flight,
        once the records of what they covered are delivered; how many."""
        now = self._clock()
        for budget_id, allowance in list(self._current.items()):
            if allowance.in_flight == 0 and (force or now - allowance.touched >= IDLE_S):
                self._retired.append(self._current.pop(budget_id))
        done = [a for a in self._retired if a.in_flight == 0]
        if not done:
            return 0
        if not await self._flushed():  # records not yet written: keep the holds
            return 0
        try:
            await self._release([a.hold_id for a in done])
        except Exception as exc:  # the ledger away: next time
            log.warning("giving back budget holds failed: %s", type(exc).__name__)
            return 0
        given = {id(a) for a in done}
        self._retired = [a for a in self._retired if id(a) not in given]
        return len(done)

    async def run_giver(self, every_s: float = 1.0, expire_every: int = 60) -> None:
        """Give holds back every ``every_s``; now and then, have the ledger drop the holds
        of replicas gone (any replica may: dropping twice drops nothing more)."""
        rounds = 0
        while True:
            await asyncio.sleep(every_s)
            await self.give_back()
            rounds += 1
            if self._expire is not None and rounds % expire_every == 0:
                try:
                    await self._expire()
                except Exception as exc:
                    log.warning("expiring budget holds failed: %s", type(exc).__name__)
