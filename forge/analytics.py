"""Usage analytics: requests, errors, tokens, cost and latency percentiles of an
organisation's usage records over a time range, grouped by any of provider, model,
project and UTC day (``GET /v1/organization/usage/analytics``; our path, not OpenAI's).

Everything is computed here, in Python, from the range's records (one streamed query):
the same numbers on SQLite and PostgreSQL, with no dialect's date or percentile
functions. Percentiles are nearest-rank: the p-th percentile of n sorted values is the
value of rank ceil(p/100 * n), always a latency some request really had. Latency
percentiles are over every request of the group; TTFT ones over the requests that
recorded a time to first token (streams), None when none did. Answer quality: how
many answers failed validation (forge.quality.validation), and the mean of the judge's
scores with how many it scored (forge.quality.judge).

Errors are the records the platform failed (status ``error`` or ``interrupted``); a
client that hung up (``client_disconnected``) is not one. The range is required and at
most 366 days, which bounds the work: the latencies of the range, 16 bytes a request.
"""

from __future__ import annotations

import csv
import io
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import UsageRecord
from forge.errors import InvalidRequest

GroupBy = Literal["provider", "model", "project", "day"]
GROUPS: tuple[GroupBy, ...] = ("provider", "model", "project", "day")
COLUMN: dict[GroupBy, str] = {  # group_by name -> the row's field
    "provider": "provider",
    "model": "model",
    "project": "project_id",
    "day": "day",
}
METRICS = (
    "requests",
    "errors",
    "error_rate",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_p50_ms",
    "latency_p95_ms",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "invalid_answers",
    "quality_mean",
    "quality_scored",
)
_NAMED: dict[str, GroupBy] = {g: g for g in GROUPS}
ERROR_STATUSES = ("error", "interrupted")
VALID = (None, "ok", "corrected")  # None: not checked (streams, other endpoints)
MAX_RANGE_DAYS = 366
MAX_TIME = 2**37  # Unix seconds; far past any record, well inside datetime's range
YIELD_PER = 5_000


class AnalyticsRow(BaseModel):
    """One group's figures; a field the query did not group by is null."""

    object: Literal["organization.usage.analytics.result"] = "organization.usage.analytics.result"
    provider: str | None = None
    model: str | None = None
    project_id: str | None = None
    day: str | None = None  # YYYY-MM-DD, UTC
    requests: int
    errors: int
    error_rate: float  # errors / requests
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    invalid_answers: int  # checked answers that were not what was asked for
    quality_mean: float | None  # of the judge's scores (None: none scored)
    quality_scored: int  # answers the judge scored


class AnalyticsList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AnalyticsRow]


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def group_by_names(values: Iterable[str]) -> list[GroupBy]:
    """The group_by values (each may be a comma list), checked, in order, once each."""
    names: list[GroupBy] = []
    for value in values:
        for part in value.split(","):
            name = part.strip()
            if not name:
                continue
            known = _NAMED.get(name)
            if known is None:
                raise _bad("group_by", f"Invalid 'group_by': {name!r}; use {', '.join(GROUPS)}.")
            if known not in names:
                names.append(known)
    return names


def time_range(start_time: int, end_time: int | None, now: int) -> tuple[int, int]:
    """[start, end) in Unix seconds; the end defaults to now. At most 366 days."""
    if not 0 <= start_time <= MAX_TIME:
        raise _bad("start_time", f"Invalid 'start_time': {start_time}; a Unix time in seconds.")
    if end_time is not None and not 0 <= end_time <= MAX_TIME:
        raise _bad("end_time", f"Invalid 'end_time': {end_time}; a Unix time in seconds.")
    end = end_time if end_time is not None else now + 1
    if end <= start_time:
        raise _bad("end_time", "Invalid 'end_time': it must be after 'start_time'.")
    if end - start_time > MAX_RANGE_DAYS * 86_400:
        days = math.ceil((end - start_time) / 86_400)
        raise _bad(
            "end_time" if end_time is not None else "start_time",
            f"The range from 'start_time' to 'end_time' is {days} days; "
            f"at most {MAX_RANGE_DAYS} days can be analysed at once.",
        )
    return start_time, end


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class _Acc:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    ttfts: array[float] = field(default_factory=lambda: array("d"))
    invalid: int = 0
    quality_total: float = 0.0
    quality_scored: int = 0


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # SQLite keeps no zone


def _row(names: Sequence[GroupBy], key: tuple[str | None, ...], acc: _Acc) -> AnalyticsRow:
    latencies, ttfts = sorted(acc.latencies), sorted(acc.ttfts)
    group = {COLUMN[n]: v for n, v in zip(names, key, strict=True)}
    return AnalyticsRow(
        **group,
        requests=acc.requests,
        errors=acc.errors,
        error_rate=round(acc.errors / acc.requests, 6),
        input_tokens=acc.input_tokens,
        output_tokens=acc.output_tokens,
        cost_usd=round(acc.cost, 10),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p95_ms=percentile(ttfts, 95),
        invalid_answers=acc.invalid,
        quality_mean=(
            round(acc.quality_total / acc.quality_scored, 6) if acc.quality_scored else None
        ),
        quality_scored=acc.quality_scored,
    )


async def usage_analytics(
    sessions: async_sessionmaker[AsyncSession],
    org_id: str,
    *,
    start_time: int,
    end_time: int | None = None,
    group_by: Sequence[str] = (),
    project_ids: Sequence[str] = (),
    now: int | None = None,
) -> list[AnalyticsRow]:
    """The figures of ``org_id``'s records created in [start_time, end_time) (Unix
    seconds; the end defaults to now), of ``project_ids`` if any, one row per group
    (one row in all without ``group_by``; none without records), sorted by group."""
    names = group_by_names(group_by)
    clock = now if now is not None else int(datetime.now(UTC).timestamp())
    start, end = time_range(start_time, end_time, clock)
    t = UsageRecord
    query = select(
        t.created_at,
        t.provider,
        t.model,
        t.project_id,
        t.status,
        t.prompt_tokens,
        t.completion_tokens,
        t.cost_usd,
        t.latency_ms,
        t.ttft_ms,
        t.validation,
        t.quality_score,
    ).where(
        t.org_id == org_id,
        t.created_at >= datetime.fromtimestamp(start, UTC),
        t.created_at < datetime.fromtimestamp(end, UTC),
    )
    if project_ids:
        query = query.where(t.project_id.in_(list(project_ids)))
    accs: dict[tuple[str | None, ...], _Acc] = {}
    async with sessions() as s:
        result = await s.stream(query.execution_options(yield_per=YIELD_PER))
        async for row in result:
            values: dict[str, str | None] = {
                "provider": row.provider,
                "model": row.model,
                "project": row.project_id,
            }
            if "day" in names:
                values["day"] = _utc(row.created_at).date().isoformat()
            key = tuple(values[n] for n in names)
            acc = accs.get(key)
            if acc is None:
                acc = accs[key] = _Acc()
            acc.requests += 1
            acc.errors += int(row.status in ERROR_STATUSES)
            acc.input_tokens += row.prompt_tokens
            acc.output_tokens += row.completion_tokens
            acc.cost += row.cost_usd
            acc.latencies.append(row.latency_ms)
            if row.ttft_ms is not None:
                acc.ttfts.append(row.ttft_ms)
            acc.invalid += int(row.validation not in VALID)
            if row.quality_score is not None:
                acc.quality_total += row.quality_score
                acc.quality_scored += 1
    ordered = sorted(accs.items(), key=lambda kv: [(v is not None, v or "") for v in kv[0]])
    return [_row(names, key, acc) for key, acc in ordered]


def csv_columns(group_by: Sequence[GroupBy]) -> list[str]:
    """The CSV's header: the grouped fields, in ``group_by``'s order, then the figures."""
    return [COLUMN[n] for n in group_by] + list(METRICS)


def to_csv(rows: Sequence[AnalyticsRow], group_by: Sequence[GroupBy]) -> str:
    """``rows`` as CSV with a header line (an empty figure: no value, e.g. no TTFT)."""
    columns = csv_columns(group_by)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.model_dump(include=set(columns)))
    return buffer.getvalue()
