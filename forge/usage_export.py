"""An organisation's usage records, one per request, streamed as JSON Lines or CSV: the
Platform plan's usage export (for billing its own customers).

Rows are read in pages by (created_at, request_id), so an export of any length holds
one page in memory, and a record written while it runs is either in it or after it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import UsageRecord

ExportFormat = Literal["jsonl", "csv"]
PAGE = 1000
COLUMNS = (
    "request_id",
    "created_at",
    "org_id",
    "project_id",
    "key_id",
    "endpoint",
    "model",
    "provider",
    "provider_model",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "usage_estimated",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "status",
    "http_status",
    "error_code",
    "route",
    "arm",
    "feedback_score",
    "validation",
    "quality_score",
)
MEDIA_TYPES: dict[ExportFormat, str] = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


def _row(record: UsageRecord) -> dict[str, Any]:
    row = {column: getattr(record, column) for column in COLUMNS}
    created: datetime = row["created_at"]
    if created.tzinfo is None:  # SQLite keeps no zone; every stored time is UTC
        created = created.replace(tzinfo=UTC)
    row["created_at"] = int(created.timestamp())
    return row


async def usage_rows(
    sessions: async_sessionmaker[AsyncSession],
    org_ids: Sequence[str],
    start: datetime,
    end: datetime,
    project_ids: Sequence[str] = (),
) -> AsyncIterator[dict[str, Any]]:
    """The records of ``org_ids`` created in [start, end), oldest first."""
    where = [
        UsageRecord.org_id.in_(list(org_ids)),
        UsageRecord.created_at >= start,
        UsageRecord.created_at < end,
    ]
    if project_ids:
        where.append(UsageRecord.project_id.in_(list(project_ids)))
    after: tuple[datetime, str] | None = None
    while True:
        query = select(UsageRecord).where(*where)
        if after is not None:
            created, request_id = after
            query = query.where(
                or_(
                    UsageRecord.created_at > created,
                    and_(UsageRecord.created_at == created, UsageRecord.request_id > request_id),
                )
            )
        query = query.order_by(UsageRecord.created_at, UsageRecord.request_id).limit(PAGE)
        async with sessions() as s:
            page = list(await s.scalars(query))
        for record in page:
            yield _row(record)
        if len(page) < PAGE:
            return
        after = (page[-1].created_at, page[-1].request_id)


async def encoded(rows: AsyncIterator[dict[str, Any]], fmt: ExportFormat) -> AsyncIterator[bytes]:
    """``rows`` as JSON Lines, or as CSV with a header line."""
    if fmt == "jsonl":
        async for row in rows:
            yield orjson.dumps(row) + b"\n"
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    async for row in rows:
        writer.writerow(row)
        if buffer.tell() >= 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
