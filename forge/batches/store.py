"""Batches in the database: a batch, its lines (each a byte range of the input file and
its fate), the claims runners take on lines, and the finalizing that writes the output
and error files. Every gateway replica runs a runner; the database is where they meet,
so a batch outlives any one of them."""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.batches.objects import (
    FINISHED,
    WINDOW_S,
    BatchError,
    BatchErrors,
    BatchObject,
    CreateBatch,
    RequestCounts,
)
from forge.db.schema import ApiKey, BatchLine, BatchRow, StoredFile, aware, utcnow
from forge.errors import Conflict, InvalidRequest, NotFound
from forge.files.store import FileStore
from forge.tenancy.objects import Page, unix
from forge.tenancy.paging import as_page, page_rows
from forge.webhooks.events import Event

Emit = Callable[[str, Event, AsyncSession], Awaitable[int]]
INSERT_CHUNK = 1000
MAX_LINES = 50_000  # OpenAI's limit a batch
WEBHOOK_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class Claimed:
    """A line a runner holds: which, where its bytes are, and as whom it runs."""

    batch_id: str
    line: int
    offset: int
    length: int
    endpoint: str
    key_hash: str
    location: str  # the input file's, in the file storage


@dataclass(frozen=True)
class LineResult:
    batch_id: str
    line: int
    ok: bool
    output: dict[str, Any]  # the output (or error) file's line


def batch_object(row: BatchRow, counts: RequestCounts) -> BatchObject:
    errors = None
    if row.errors:
        errors = BatchErrors(data=[BatchError(**e) for e in json.loads(row.errors)])
    return BatchObject(
        id=row.id,
        endpoint=row.endpoint,
        errors=errors,
        input_file_id=row.input_file_id,
        completion_window=row.completion_window,
        status=row.status,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        created_at=unix(row.created_at) or 0,
        in_progress_at=unix(row.in_progress_at),
        expires_at=unix(row.expires_at),
        finalizing_at=unix(row.finalizing_at),
        completed_at=unix(row.completed_at),
        failed_at=unix(row.failed_at),
        expired_at=unix(row.expired_at),
        cancelling_at=unix(row.cancelling_at),
        cancelled_at=unix(row.cancelled_at),
        request_counts=counts,
        metadata=json.loads(row.batch_metadata) if row.batch_metadata else None,
        paused_until=unix(row.paused_until),
        pause_reason=row.pause_reason,
    )


def line_offsets(data: bytes, base: int = 0) -> list[tuple[int, int]]:
    """(offset, length) of each non-blank line of ``data``, ``base`` its first byte's."""
    out, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        if data[start:end].strip():
            out.append((base + start, end - start))
        start = end + 1
    return out


class BatchStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        files: FileStore,
        *,
        claim_s: float = 60.0,
        emit: Emit | None = None,
    ) -> None:
        self._sessions = sessions
        self.files = files
        self.claim_s = claim_s
        self._emit = emit

    # -- the API --------------------------------------------------------------------------

    async def create(
        self, org_id: str, project_id: str, key_id: str, request: CreateBatch
    ) -> BatchObject:
        """Index the input file's lines and put the batch in progress. The file must be
        this project's and of purpose ``batch`` (validated then: one ``url`` for all
        lines, unique ``custom_id``s); a line for another endpoint than the batch's
        becomes an error line when it runs, the rest goes on."""
        try:
            stored = await self.files.stored(request.input_file_id, project_id)
        except NotFound:
            raise InvalidRequest(
                f"Invalid 'input_file_id': no file {request.input_file_id!r} in this project.",
                param="input_file_id",
                code="invalid_file",
            ) from None
        if stored.purpose != "batch":
            raise InvalidRequest(
                f"Invalid 'input_file_id': {stored.id} has purpose {stored.purpose!r}; a "
                "batch needs a file of purpose 'batch'.",
                param="input_file_id",
                code="invalid_file_purpose",
            )
        offsets: list[tuple[int, int]] = []
        carry, base = b"", 0
        async for block in self.files.storage.read(stored.location):
            data = carry + block
            cut = data.rfind(b"\n") + 1
            offsets.extend(line_offsets(data[:cut], base))
            carry, base = data[cut:], base + cut
        offsets.extend(line_offsets(carry, base))
        if not offsets or len(offsets) > MAX_LINES:
            raise InvalidRequest(
                f"Invalid 'input_file_id': a batch holds 1 to {MAX_LINES} requests; "
                f"{stored.id} has {len(offsets)}.",
                param="input_file_id",
                code="invalid_file",
            )
        now = utcnow()
        batch_id = "batch_" + uuid.uuid4().hex[:24]
        row = BatchRow(
            id=batch_id,
            org_id=org_id,
            project_id=project_id,
            key_id=key_id,
            endpoint=request.endpoint,
            input_file_id=stored.id,
            completion_window=request.completion_window,
            status="in_progress",
            batch_metadata=json.dumps(request.metadata) if request.metadata else None,
            total=len(offsets),
            created_at=now,
            in_progress_at=now,
            expires_at=now + timedelta(seconds=WINDOW_S[request.completion_window]),
        )
        async with self._sessions.begin() as s:
            s.add(row)
            await s.flush()
            for start in range(0, len(offsets), INSERT_CHUNK):
                chunk = offsets[start : start + INSERT_CHUNK]
                await s.execute(
                    insert(BatchLine),
                    [
                        {
                            "batch_id": batch_id,
                            "line": start + i + 1,
                            "offset": offset,
                            "length": length,
                            "status": "pending",
                        }
                        for i, (offset, length) in enumerate(chunk)
                    ],
                )
        return batch_object(row, RequestCounts(total=len(offsets), completed=0, failed=0))

    async def _row(self, s: AsyncSession, batch_id: str, project_id: str) -> BatchRow:
        row = await s.get(BatchRow, batch_id)
        if row is None or row.project_id != project_id:
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
        return row

    async def _counts(self, s: AsyncSession, row: BatchRow) -> RequestCounts:
        query = (
            select(BatchLine.status, func.count())
            .where(BatchLine.batch_id == row.id, BatchLine.status.in_(("done", "failed")))
            .group_by(BatchLine.status)
        )
        by_status = {status: n for status, n in (await s.execute(query)).all()}
        return RequestCounts(
            total=row.total, completed=by_status.get("done", 0), failed=by_status.get("failed", 0)
        )

    async def get(self, batch_id: str, project_id: str) -> BatchObject:
        async with self._sessions() as s:
            row = await self._row(s, batch_id, project_id)
            return batch_object(row, await self._counts(s, row))

    async def list(self, project_id: str, after: str | None, limit: int) -> Page[BatchObject]:
        async with self._sessions() as s:
            rows, more = await page_rows(
                s, BatchRow, [BatchRow.project_id == project_id], limit, after, "desc"
            )
            return as_page([batch_object(r, await self._counts(s, r)) for r in rows], more)

    async def cancel(self, batch_id: str, project_id: str) -> BatchObject:
        """``cancelling``: no new line starts; those running finish; then ``cancelled``
        with the output of the lines that ran."""
        async with self._sessions.begin() as s:
            row = await self._row(s, batch_id, project_id)
            if row.status in FINISHED or row.status == "finalizing":
                raise Conflict(
                    f"Batch {batch_id} is {row.status}; it cannot be cancelled.",
                    param="batch_id",
                    code="batch_not_cancellable",
                )
            if row.status != "cancelling":
                row.status, row.cancelling_at = "cancelling", utcnow()
            await s.flush()
            return batch_object(row, await self._counts(s, row))

    async def in_use(self, file_id: str) -> str | None:
        """An unfinished batch reading ``file_id``, if any."""
        query = select(BatchRow.id).where(
            BatchRow.input_file_id == file_id, BatchRow.status.not_in(FINISHED)
        )
        async with self._sessions() as s:
            return await s.scalar(query.limit(1))

    # -- the runners' side ----------------------------------------------------------------

    async def claim(self, runner: str, limit: int) -> builtins.list[Claimed]:
        """Up to ``limit`` lines for ``runner``: unclaimed ones, then ones whose claim ran
        out (their runner died), of running batches that no budget holds back; the
        oldest batch first. Each query walks the (batch, status, line) index: a claim
        costs the lines it takes, not the batch's size."""
        now = utcnow()
        until = now + timedelta(seconds=self.claim_s)
        live = or_(BatchRow.paused_until.is_(None), BatchRow.paused_until < now)
        # Reads first, in their own transaction; then a transaction that writes first. On
        # SQLite a transaction that reads and then writes fails at once ("database is
        # locked", a stale snapshot) when another connection wrote in between, where one
        # that starts by writing waits its turn (busy_timeout). The UPDATE re-checks that
        # each line is still free, so nothing is claimed twice.
        wanted: builtins.list[tuple[str, str, str, str, builtins.list[int]]] = []
        async with self._sessions() as s:
            batches = (
                await s.execute(
                    select(BatchRow.id, BatchRow.endpoint, ApiKey.key_hash, StoredFile.location)
                    .join(ApiKey, ApiKey.id == BatchRow.key_id)
                    .join(StoredFile, StoredFile.id == BatchRow.input_file_id)
                    .where(BatchRow.status == "in_progress", live)
                    .order_by(BatchRow.created_at, BatchRow.id)
                )
            ).all()
            need = limit
            for batch_id, endpoint, key_hash, location in batches:
                if need <= 0:
                    break
                lines = await self._free_lines(s, batch_id, need, now)
                if lines:
                    wanted.append((batch_id, endpoint, key_hash, location, lines))
                    need -= len(lines)
        if not wanted:
            return []
        free = or_(
            BatchLine.status == "pending",
            and_(BatchLine.status == "claimed", BatchLine.claimed_until < now),
        )
        out: builtins.list[Claimed] = []
        async with self._sessions.begin() as s:
            for batch_id, endpoint, key_hash, location, lines in wanted:
                await s.execute(
                    update(BatchLine)
                    .where(BatchLine.batch_id == batch_id, BatchLine.line.in_(lines), free)
                    .values(status="claimed", claimed_by=runner, claimed_until=until)
                )
                won = await s.execute(
                    select(BatchLine.line, BatchLine.offset, BatchLine.length)
                    .where(
                        BatchLine.batch_id == batch_id,
                        BatchLine.line.in_(lines),
                        BatchLine.claimed_by == runner,
                        BatchLine.claimed_until == until,
                    )
                    .order_by(BatchLine.line)
                )
                out.extend(
                    Claimed(batch_id, line, offset, length, endpoint, key_hash, location)
                    for line, offset, length in won.all()
                )
        return out

    @staticmethod
    async def _free_lines(
        s: AsyncSession, batch_id: str, need: int, now: datetime
    ) -> builtins.list[int]:
        """Unclaimed lines first, in order; then lines whose claim ran out."""
        pending = await s.scalars(
            select(BatchLine.line)
            .where(BatchLine.batch_id == batch_id, BatchLine.status == "pending")
            .order_by(BatchLine.line)
            .limit(need)
        )
        lines = list(pending)
        if len(lines) < need:
            lapsed = await s.scalars(
                select(BatchLine.line)
                .where(
                    BatchLine.batch_id == batch_id,
                    BatchLine.status == "claimed",
                    BatchLine.claimed_until < now,
                )
                .order_by(BatchLine.line)
                .limit(need - len(lines))
            )
            lines.extend(lapsed)
        return lines

    async def finish(self, results: builtins.list[LineResult]) -> None:
        """Record results, one statement for all; a line already finished (its claim ran
        out and another runner finished it first) keeps its first result."""
        if not results:
            return
        statement = (
            update(BatchLine)
            .where(
                BatchLine.batch_id == bindparam("b"),
                BatchLine.line == bindparam("l"),
                # not IN: an executemany takes no expanding parameter
                or_(BatchLine.status == "pending", BatchLine.status == "claimed"),
            )
            .values(
                status=bindparam("s"), result=bindparam("r"), claimed_by=None, claimed_until=None
            )
        )
        params = [
            {
                "b": r.batch_id,
                "l": r.line,
                "s": "done" if r.ok else "failed",
                "r": json.dumps(r.output, separators=(",", ":")),
            }
            for r in results
        ]
        async with self._sessions.begin() as s:
            await (await s.connection()).execute(statement, params)

    async def release(self, claimed: builtins.list[Claimed]) -> None:
        """Lines handed back unrun (a budget stop, a rate limit, a runner stopping)."""
        async with self._sessions.begin() as s:
            for c in claimed:
                await s.execute(
                    update(BatchLine)
                    .where(
                        BatchLine.batch_id == c.batch_id,
                        BatchLine.line == c.line,
                        BatchLine.status == "claimed",
                    )
                    .values(status="pending", claimed_by=None, claimed_until=None)
                )

    async def pause(self, batch_id: str, until: datetime, reason: str) -> None:
        async with self._sessions.begin() as s:
            await s.execute(
                update(BatchRow)
                .where(BatchRow.id == batch_id)
                .values(paused_until=until, pause_reason=reason[:300])
            )

    # -- the end of a batch ---------------------------------------------------------------

    async def settle(self) -> int:
        """Finish what is ready: batches past their window expire (their unrun lines
        error lines ``batch_expired``); batches with no line left to run (cancelling: none
        running) are finalized. Any runner may call it; one wins each batch."""
        now = utcnow()
        done = 0
        async with self._sessions() as s:
            rows = list(
                await s.scalars(
                    select(BatchRow).where(
                        BatchRow.status.in_(("in_progress", "cancelling", "finalizing"))
                    )
                )
            )
        for row in rows:
            if row.status == "in_progress" and aware(row.expires_at) <= now:  # type: ignore[operator]
                await self._expire_lines(row.id)
                done += await self._finalize(row, "expired")
                continue
            left = await self._left(row)
            if row.status == "in_progress" and left == 0:
                done += await self._finalize(row, "completed")
            elif row.status == "cancelling" and await self._running(row.id) == 0:
                done += await self._finalize(row, "cancelled")
            elif row.status == "finalizing" and _stale(row.finalizing_at, now):
                done += await self._finalize(row, _target(row))  # its finalizer died
        return done

    async def _left(self, row: BatchRow) -> int:
        async with self._sessions() as s:
            query = select(func.count()).where(
                BatchLine.batch_id == row.id, BatchLine.status.in_(("pending", "claimed"))
            )
            return int(await s.scalar(query) or 0)

    async def _running(self, batch_id: str) -> int:
        now = utcnow()
        async with self._sessions() as s:
            query = select(func.count()).where(
                BatchLine.batch_id == batch_id,
                BatchLine.status == "claimed",
                BatchLine.claimed_until >= now,
            )
            return int(await s.scalar(query) or 0)

    async def _expire_lines(self, batch_id: str) -> None:
        async with self._sessions.begin() as s:
            lines = list(
                await s.scalars(
                    select(BatchLine).where(
                        BatchLine.batch_id == batch_id,
                        BatchLine.status.in_(("pending", "claimed")),
                    )
                )
            )
            for line in lines:
                error = {"code": "batch_expired", "message": "This line was not run in time."}
                line.status = "failed"
                line.result = json.dumps(
                    {"id": line_id(batch_id, line.line), "custom_id": None, "response": None,
                     "error": error}
                )  # fmt: skip

    async def _finalize(self, row: BatchRow, final: str) -> int:
        """Claim the batch for finalizing (one runner wins), write its output and error
        files (lines in input order), then set ``final``."""
        now = utcnow()
        expected = (row.status,)
        async with self._sessions.begin() as s:
            claimed: Any = await s.execute(
                update(BatchRow)
                .where(BatchRow.id == row.id, BatchRow.status.in_(expected))
                .values(status="finalizing", finalizing_at=now, pause_reason=_target_note(final))
            )
            if claimed.rowcount == 0:
                return 0
        outputs: dict[str, str | None] = {}
        for ok, suffix in ((True, "output"), (False, "errors")):
            if await self._count(row.id, "done" if ok else "failed") == 0:
                outputs[suffix] = None
                continue
            file_id = f"file-{row.id.removeprefix('batch_')}{'o' if ok else 'e'}"
            await self.files.save_generated(
                row.org_id,
                row.project_id,
                file_id,
                f"{row.id}_{suffix}.jsonl",
                "batch_output",
                self._lines(row.id, "done" if ok else "failed"),
            )
            outputs[suffix] = file_id
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}
        async with self._sessions.begin() as s:
            await s.execute(
                update(BatchRow)
                .where(BatchRow.id == row.id)
                .values(
                    status=final,
                    output_file_id=outputs["output"],
                    error_file_id=outputs["errors"],
                    pause_reason=None,
                    paused_until=None,
                    **{stamp[final]: utcnow()},
                )
            )
            if self._emit is not None and final in WEBHOOK_STATUSES:
                event = Event(
                    type=f"batch.{final}",
                    timestamp=utcnow(),
                    data={"id": row.id, "project_id": row.project_id},
                )
                await self._emit(row.org_id, event, s)
        return 1

    async def _count(self, batch_id: str, status: str) -> int:
        async with self._sessions() as s:
            query = select(func.count()).where(
                BatchLine.batch_id == batch_id, BatchLine.status == status
            )
            return int(await s.scalar(query) or 0)

    async def _lines(
        self, batch_id: str, status: str, page: int = INSERT_CHUNK
    ) -> AsyncIterator[bytes]:
        """The finished lines' output, in input order, a page at a time."""
        after = 0
        while True:
            async with self._sessions() as s:
                rows = (
                    await s.execute(
                        select(BatchLine.line, BatchLine.result)
                        .where(
                            BatchLine.batch_id == batch_id,
                            BatchLine.status == status,
                            BatchLine.line > after,
                        )
                        .order_by(BatchLine.line)
                        .limit(page)
                    )
                ).all()
            if not rows:
                return
            yield "".join(f"{result}\n" for _, result in rows).encode()
            after = rows[-1][0]


def line_id(batch_id: str, line: int) -> str:
    return f"batch_req_{batch_id.removeprefix('batch_')}_{line}"


def _target_note(final: str) -> str:
    return f"finalizing:{final}"


def _target(row: BatchRow) -> str:
    """What a batch found finalizing was becoming (kept in ``pause_reason`` meanwhile)."""
    note = row.pause_reason or ""
    return note.removeprefix("finalizing:") if note.startswith("finalizing:") else "completed"


def _stale(when: datetime | None, now: datetime, after_s: float = 300.0) -> bool:
    stamp = aware(when)
    return stamp is not None and (now - stamp).total_seconds() > after_s
