"""Spend counters: what each key, project and organisation has spent per day and per
month (dollars, requests, tokens), kept by the usage recorder in the same transaction as
the usage records it counts, so the counters always equal the sum of the records (a
record delivered twice is inserted once and counted once).

Budgets read them (one row per subject and period, not a scan of the records), and so
will the usage and cost reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from forge.usage import UsageEvent

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
SpendScope = Literal["organization", "project", "key"]


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
