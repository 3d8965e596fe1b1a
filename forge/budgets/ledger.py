"""The budget ledger: grants gateway replicas holds on budgets, never more than is left.

What is left of a budget is its limit, less what its subject spent in the period (the
spend counters, which the usage recorder keeps with the records: forge.spend), less the
holds out. A replica admits requests against its holds locally, at their worst-case cost
(forge.budgets.gate), and gives a hold back once the records of the requests it covered
are written: until then the money is counted twice (in the counter and in the hold), so
the ledger errs on the safe side and never in the other direction.

Holds are rows in the database, written before the grant is answered: a restarted
ledger knows exactly what is out. A replica that dies leaves its holds behind; they are
dropped after ``hold_max_s`` (by then the successor has written the dead replica's
records), and until then they keep the budget conservative. Grants are serialised (one
lock): two replicas asking at once cannot both get the last dollar.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.budgets.model import Budget
from forge.db.schema import BudgetHold
from forge.spend import current_spend, period_start

log = logging.getLogger(__name__)
HOLD_MAX_S = 900.0  # longer than any request may run
SHARE = 0.25  # a hold takes at most this share of what is left: holds shrink near the end


class Ask(BaseModel):
    """A replica's ask: at least ``need`` (the request waiting), ``want`` if there is."""

    budget: Budget
    need: float
    want: float


class Hold(BaseModel):
    id: str
    budget_id: str
    amount: float


class Reservation(BaseModel):
    """The holds granted (all of the asks), or the first budget that had too little."""

    holds: list[Hold] = []
    refused: Budget | None = None
    spent: float = 0.0  # the refused budget's, holds included


class _Out(BaseModel):
    budget_id: str
    period_start: str
    amount: float
    granted_at: float


class BudgetLedger:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        hold_max_s: float = HOLD_MAX_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self.hold_max_s = hold_max_s
        self._clock = clock
        self._out: dict[str, _Out] = {}
        self._lock = asyncio.Lock()
        self._restored = False

    async def _restore(self) -> None:
        """The holds out, from the database (once, on first use after a (re)start)."""
        if self._restored:
            return
        async with self._sessions() as s:
            for row in await s.scalars(select(BudgetHold)):
                created = (
                    row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
                )
                self._out[row.id] = _Out(
                    budget_id=row.budget_id,
                    period_start=row.period_start,
                    amount=row.amount,
                    granted_at=created.timestamp(),
                )
        self._restored = True

    def _held(self, budget_id: str, start: str) -> float:
        return sum(
            o.amount
            for o in self._out.values()
            if o.budget_id == budget_id and o.period_start == start
        )

    async def reserve(self, asks: list[Ask], release: list[str] | None = None) -> Reservation:
        """Holds for every ask, or none: the first budget that cannot cover its ask's
        ``need`` is named instead. ``release``: holds the asker gives back first (their
        requests' records are written), in the same call."""
        async with self._lock:
            await self._restore()
            if release:
                await self._drop(release)
            now = self._clock()
            when = datetime.fromtimestamp(now, UTC)
            spent = await current_spend(self._sessions, [a.budget for a in asks], when)
            grants: list[tuple[Ask, str, float]] = []
            for ask in asks:
                b = ask.budget
                start = period_start(when, b.period)
                committed = spent[b.id] + self._held(b.id, start)
                left = b.limit - committed
                if left + 1e-12 < ask.need:
                    return Reservation(refused=b, spent=committed)
                grants.append((ask, start, max(ask.need, min(ask.want, left * SHARE))))
            holds = [
                Hold(id="hold_" + uuid.uuid4().hex[:24], budget_id=a.budget.id, amount=amount)
                for a, _, amount in grants
            ]
            async with self._sessions() as s, s.begin():
                for hold, (_, start, _) in zip(holds, grants, strict=True):
                    s.add(
                        BudgetHold(
                            id=hold.id,
                            budget_id=hold.budget_id,
                            period_start=start,
                            amount=hold.amount,
                            created_at=when,
                        )
                    )
            for hold, (_, start, _) in zip(holds, grants, strict=True):
                self._out[hold.id] = _Out(
                    budget_id=hold.budget_id,
                    period_start=start,
                    amount=hold.amount,
                    granted_at=now,
                )
            return Reservation(holds=holds)

    async def release(self, hold_ids: list[str]) -> int:
        """Holds given back (their requests' records are written); how many were out."""
        async with self._lock:
            await self._restore()
            return await self._drop(hold_ids)

    async def _drop(self, hold_ids: list[str]) -> int:
        if not hold_ids:
            return 0
        async with self._sessions() as s, s.begin():
            await s.execute(delete(BudgetHold).where(BudgetHold.id.in_(hold_ids)))
        return sum(self._out.pop(h, None) is not None for h in hold_ids)

    async def expire(self) -> int:
        """Drop holds older than ``hold_max_s`` (a replica that died with them)."""
        cutoff = self._clock() - self.hold_max_s
        async with self._lock:
            await self._restore()
            stale = [h for h, o in self._out.items() if o.granted_at < cutoff]
        if stale:
            log.warning("dropping %d budget holds of replicas gone", len(stale))
        return await self.release(stale)

    async def outstanding(self) -> float:
        """The sum of the holds out (for tests and `forge status`)."""
        await self._restore()
        return sum(o.amount for o in self._out.values())
