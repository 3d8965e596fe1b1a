"""Budgets in the database: set by admins, read with a key when it is verified (a key's
budgets travel with its record to the gateways, as its rate-limit rules do)."""

from __future__ import annotations

import uuid

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.budgets.model import Budget, Unit, plan_budget
from forge.db.schema import BudgetRow
from forge.errors import Conflict, NotFound
from forge.spend import Period, SpendScope


def _budget(row: BudgetRow) -> Budget:
    return Budget(
        id=row.id,
        org_id=row.org_id,
        scope=row.scope,
        subject_id=row.subject_id,
        period=row.period,
        unit=row.unit,
        limit=row.limit,
    )


class BudgetStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self.sessions = sessions  # for the spend counters beside them

    async def for_key(
        self, org_id: str, project_id: str, key_id: str, plan: str | None
    ) -> list[Budget]:
        """Every budget a key's requests count against, its plan's quota included."""
        subjects = [("organization", org_id), ("project", project_id), ("key", key_id)]
        of_subject = [
            and_(BudgetRow.scope == scope, BudgetRow.subject_id == subject)
            for scope, subject in subjects
        ]
        query = select(BudgetRow).where(BudgetRow.org_id == org_id, or_(*of_subject))
        async with self._sessions() as s:
            budgets = [_budget(r) for r in await s.scalars(query.order_by(BudgetRow.id))]
        quota = plan_budget(org_id, plan)
        return budgets + ([quota] if quota is not None else [])

    async def create(
        self,
        org_id: str,
        scope: SpendScope,
        subject_id: str,
        period: Period,
        unit: Unit,
        limit: float,
    ) -> Budget:
        """409 when the subject already has a budget of this period and unit."""
        row = BudgetRow(
            id="budget_" + uuid.uuid4().hex[:24],
            org_id=org_id,
            scope=scope,
            subject_id=subject_id,
            period=period,
            unit=unit,
            limit=limit,
        )
        try:
            async with self._sessions() as s, s.begin():
                s.add(row)
        except IntegrityError:
            raise Conflict(
                f"The {scope} {subject_id!r} already has a {period}ly budget in {unit}; "
                "delete it first.",
                param="period",
            ) from None
        return _budget(row)

    async def list(self, org_id: str, scope: SpendScope, subject_id: str) -> list[Budget]:
        query = select(BudgetRow).where(
            BudgetRow.org_id == org_id,
            BudgetRow.scope == scope,
            BudgetRow.subject_id == subject_id,
        )
        async with self._sessions() as s:
            return [_budget(r) for r in await s.scalars(query.order_by(BudgetRow.id))]

    async def get(self, org_id: str | None, budget_id: str) -> Budget:
        """A budget of ``org_id`` (None: of any organisation); 404 for another's."""
        query = select(BudgetRow).where(BudgetRow.id == budget_id)
        if org_id is not None:
            query = query.where(BudgetRow.org_id == org_id)
        async with self._sessions() as s:
            row = await s.scalar(query)
        if row is None:
            raise NotFound(f"No budget with id {budget_id!r}.", param="budget_id")
        return _budget(row)

    async def delete(self, org_id: str | None, budget_id: str) -> Budget:
        budget = await self.get(org_id, budget_id)
        async with self._sessions() as s, s.begin():
            await s.execute(delete(BudgetRow).where(BudgetRow.id == budget_id))
        return budget
