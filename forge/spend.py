"""Spend counters: what each key, project and organisation has spent per day and per
month (dollars, requests, tokens), kept by the usage recorder in the same transaction as
the usage records it counts, so the counters always equal the sum of the records (a
record delivered twice is inserted once and counted once).

Budgets read them (one row per subject and period, not a scan of the records), and so
will the usage and cost reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import Spend
from forge.usage import UsageEvent

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
SpendScope = Literal["organization", "project", "key"]
SPEND_COLUMNS = {"usd": "cost_usd", "requests": "requests", "tokens": "tokens"}


def period_start(when: datetime, period: Period) -> str:
    """The UTC day (``2026-12-03``) or month (``2026-12-01``) ``when`` falls in (a naive
    time is taken as UTC, as SQLite hands them back)."""
    day = (when.astimezone(UTC) if when.tzinfo else when).date()
    return (day if period == "day" else day.replace(day=1)).isoformat()


@dataclass(slots=True)
class SpendDelta:
    scope: SpendScope
    subject_id: str
    period: Period
    period_start: str
    org_id: str
    cost_usd: float = 0.0
    requests: int = 0
    tokens: int = 0


def spend_deltas(events: Iterable[UsageEvent]) -> list[SpendDelta]:
    """The counter increments for ``events``: each counts for its key, project and
    organisation, for its day and its month."""
    deltas: dict[tuple[str, str, str, str], SpendDelta] = {}
    for event in events:
        if event.org_id is None:
            continue
        subjects: list[tuple[SpendScope, str | None]] = [
            ("organization", event.org_id),
            ("project", event.project_id),
            ("key", event.key_id),
        ]
        for period in PERIODS:
            start = period_start(event.created_at, period)
            for scope, subject in subjects:
                if subject is None:
                    continue
                key = (scope, subject, period, start)
                delta = deltas.get(key)
                if delta is None:
                    delta = deltas[key] = SpendDelta(scope, subject, period, start, event.org_id)
                delta.cost_usd += event.cost_usd
                delta.requests += 1
                delta.tokens += event.prompt_tokens + event.completion_tokens
    return list(deltas.values())


class Measured(Protocol):
    """What ``current_spend`` needs of a budget (forge.budgets.model.Budget)."""

    @property
    def id(self) -> str: ...
    @property
    def scope(self) -> SpendScope: ...
    @property
    def subject_id(self) -> str: ...
    @property
    def period(self) -> Period: ...
    @property
    def unit(self) -> str: ...


async def current_spend(
    sessions: async_sessionmaker[AsyncSession], budgets: Sequence[Measured], when: datetime
) -> dict[str, float]:
    """Each budget's spend in its period at ``when`` (in its unit), one query."""
    if not budgets:
        return {}
    keys = {b.id: (b.scope, b.subject_id, b.period, period_start(when, b.period)) for b in budgets}
    match = [
        and_(
            Spend.scope == scope,
            Spend.subject_id == subject,
            Spend.period == period,
            Spend.period_start == start,
        )
        for scope, subject, period, start in set(keys.values())
    ]
    async with sessions() as s:
        rows = {
            (r.scope, r.subject_id, r.period, r.period_start): r
            for r in await s.scalars(select(Spend).where(or_(*match)))
        }
    spent: dict[str, float] = {}
    for b in budgets:
        row = rows.get(keys[b.id])
        spent[b.id] = float(getattr(row, SPEND_COLUMNS[b.unit])) if row is not None else 0.0
    return spent
