"""Usage and cost reports as OpenAI's Admin API returns them: time buckets (``1m``,
``1h``, ``1d``) of an organisation's usage records, optionally grouped by project, key
and model, a page of buckets at a time (``next_page`` is the next bucket's start).

Aggregated from the usage records of the page's window (one query, summed here): exact,
and bounded by the page (at most 31 days, 168 hours or 1,440 minutes).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import UsageRecord
from forge.errors import InvalidRequest

Report = Literal["completions", "embeddings", "costs"]
WIDTHS = {"1m": 60, "1h": 3_600, "1d": 86_400}
PAGE = {"1m": (60, 1_440), "1h": (24, 168), "1d": (7, 31)}  # default and most buckets
ENDPOINTS: dict[Report, tuple[str, ...] | None] = {
    "completions": ("chat/completions", "completions"),
    "embeddings": ("embeddings",),
    "costs": None,  # every endpoint
}
GROUPS: dict[Report, dict[str, str]] = {  # OpenAI's group_by name -> record column
    "completions": {"project_id": "project_id", "api_key_id": "key_id", "model": "model"},
    "embeddings": {"project_id": "project_id", "api_key_id": "key_id", "model": "model"},
    "costs": {"project_id": "project_id", "api_key_id": "key_id", "line_item": "model"},
}


class ReportQuery(BaseModel):
    start_time: int
    end_time: int | None = None
    bucket_width: str = "1d"
    project_ids: list[str] = []
    api_key_ids: list[str] = []
    models: list[str] = []
    group_by: list[str] = []
    limit: int | None = None
    page: str | None = None


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _window(q: ReportQuery, now: int) -> tuple[int, int, int, int]:
    """Bucket width, the page's first bucket, its end, and the report's end."""
    width = WIDTHS.get(q.bucket_width)
    if width is None:
        raise _bad("bucket_width", f"Invalid 'bucket_width': {q.bucket_width!r}; use 1m, 1h or 1d.")
    default, most = PAGE[q.bucket_width]
    limit = q.limit if q.limit is not None else default
    if not 1 <= limit <= most:
        raise _bad("limit", f"Invalid 'limit': {limit}; from 1 to {most} for {q.bucket_width}.")
    if q.start_time < 0:
        raise _bad("start_time", "Invalid 'start_time': a Unix time in seconds, not negative.")
    # the default end: the end of the bucket that holds now (OpenAI's end is exclusive)
    end = q.end_time if q.end_time is not None else now + 1
    if q.end_time is None and end > q.start_time:
        end = q.start_time - (q.start_time - end) // width * width
    if end <= q.start_time:
        raise _bad("end_time", "Invalid 'end_time': it must be after 'start_time'.")
    first = q.start_time
    if q.page is not None:
        if not q.page.isdigit() or not q.start_time <= int(q.page) < end:
            raise _bad("page", f"Invalid 'page': {q.page!r} is not a page of this report.")
        first = int(q.page)
    return width, first, min(end, first + width * limit), end


def _unix(when: datetime) -> int:
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())


class UsageReports:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def report(self, report: Report, org_id: str, q: ReportQuery) -> dict[str, Any]:
        if report == "costs" and q.bucket_width != "1d":
            raise _bad("bucket_width", "Costs are reported by day: 'bucket_width' is 1d.")
        groups = GROUPS[report]
        for name in q.group_by:
            if name not in groups:
                raise _bad("group_by", f"Invalid 'group_by': {name!r}; use {', '.join(groups)}.")
        width, first, page_end, end = _window(q, int(datetime.now(UTC).timestamp()))
        t = UsageRecord
        query = select(
            t.created_at,
            t.project_id,
            t.key_id,
            t.model,
            t.prompt_tokens,
            t.completion_tokens,
            t.cost_usd,
        ).where(
            t.org_id == org_id,
            t.created_at >= datetime.fromtimestamp(first, UTC),
            t.created_at < datetime.fromtimestamp(page_end, UTC),
        )
        endpoints = ENDPOINTS[report]
        if endpoints is not None:
            query = query.where(t.endpoint.in_(endpoints))
        if q.project_ids:
            query = query.where(t.project_id.in_(q.project_ids))
        if q.api_key_ids:
            query = query.where(t.key_id.in_(q.api_key_ids))
        if q.models and report != "costs":
            query = query.where(t.model.in_(q.models))
        sums: dict[tuple[int, tuple[str | None, ...]], list[float]] = defaultdict(
            lambda: [0, 0, 0, 0.0]
        )
        async with self._sessions() as s:
            for row in await s.execute(query):
                bucket = first + (_unix(row.created_at) - first) // width * width
                key = tuple(getattr(row, groups[g]) for g in q.group_by)
                acc = sums[bucket, key]
                acc[0] += row.prompt_tokens
                acc[1] += row.completion_tokens
                acc[2] += 1
                acc[3] += row.cost_usd
        data = []
        for start in range(first, page_end, width):
            results = [
                self._result(report, dict(zip(q.group_by, key, strict=True)), acc)
                for (bucket, key), acc in sorted(
                    sums.items(), key=lambda kv: [str(v) for v in kv[0][1]]
                )
                if bucket == start
            ]
            data.append(
                {
                    "object": "bucket",
                    "start_time": start,
                    "end_time": start + width,
                    "results": results,
                }
            )
        more = page_end < end
        return {
            "object": "page",
            "data": data,
            "has_more": more,
            "next_page": str(page_end) if more else None,
        }

    @staticmethod
    def _result(report: Report, group: dict[str, Any], acc: list[float]) -> dict[str, Any]:
        prompt, completion, requests, cost = acc
        if report == "costs":
            return {
                "object": "organization.costs.result",
                "amount": {"value": round(cost, 10), "currency": "usd"},
                "line_item": group.get("line_item"),
                "project_id": group.get("project_id"),
                "api_key_id": group.get("api_key_id"),
            }
        common = {
            "input_tokens": int(prompt),
            "num_model_requests": int(requests),
            "project_id": group.get("project_id"),
            "user_id": None,
            "api_key_id": group.get("api_key_id"),
            "model": group.get("model"),
        }
        if report == "embeddings":
            return {"object": "organization.usage.embeddings.result", **common}
        return {
            "object": "organization.usage.completions.result",
            **common,
            "output_tokens": int(completion),
            "input_cached_tokens": 0,
            "input_audio_tokens": 0,
            "output_audio_tokens": 0,
            "batch": None,
            "service_tier": None,
        }
