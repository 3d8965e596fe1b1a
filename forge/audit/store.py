"""The audit log in the database: appended by any gateway replica or the CLI, listed per
organisation as OpenAI's Admin API lists it, verified and exported whole.

Appends are serialised by the database, not by a process: the unique ``prev_hash``
turns a race for the chain's head into an integrity error for the loser, which links
to the new head and tries again.
"""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.audit.chain import GENESIS, ChainCheck, ChainEntry, Stub, Verdict, link
from forge.audit.personal import commit, digests, reveal
from forge.db.schema import AuditCheckpoint, AuditLogEntry, AuditPersonal
from forge.errors import InvalidRequest, ServiceUnavailable
from forge.tenancy.objects import Page
from forge.tenancy.paging import check_limit

APPEND_ATTEMPTS = 20
VERIFY_ATTEMPTS = 3


class _Raced(Exception):
    """Another compaction moved the checkpoint first (this one rolls back)."""


EXPORT_BATCH = 1000


class AuditEvent(BaseModel):
    """What happened: OpenAI's event ``type`` and its ``details``, who did it (``actor``,
    OpenAI's actor object), where (organisation, project), from which address, and with
    what result (``{"status": 201}``, or a refusal's status and error code)."""

    type: str
    org_id: str | None
    project_id: str | None = None
    actor: dict[str, Any] | None = None
    actor_id: str | None = None
    details: dict[str, Any] = {}
    source_ip: str | None = None
    result: dict[str, Any] = {}


class AuditFilter(BaseModel):
    """OpenAI's list filters (``effective_at[gt]`` and the ``*_ids[]`` lists)."""

    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None
    project_ids: list[str] = []
    event_types: list[str] = []
    actor_ids: list[str] = []
    resource_ids: list[str] = []


def audit_details(event: str, target: str | None, fields: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI's details of an event: the target's id, and the fields asked for (``data``
    for a creation, ``changes_requested`` otherwise)."""
    details: dict[str, Any] = {"id": target} if target else {}
    if fields:
        details["data" if event.endswith(".created") else "changes_requested"] = fields
    return details


def new_audit_id() -> str:
    return "audit_log-" + uuid.uuid4().hex[:24]


def _content(event: AuditEvent, entry_id: str, when: int) -> dict[str, Any]:
    content: dict[str, Any] = {
        "id": entry_id,
        "type": event.type,
        "effective_at": when,
        "organization_id": event.org_id,
        "actor": event.actor,
        event.type: event.details,
        "source_ip": event.source_ip,
        "result": event.result,
    }
    if event.project_id is not None:
        content["project"] = {"id": event.project_id}
    return content


def _entry(row: AuditLogEntry) -> ChainEntry:
    content = orjson.loads(row.content)
    purged = row.purged_at is not None
    return ChainEntry(
        seq=row.seq,
        id=row.id,
        prev_hash=row.prev_hash,
        hash=row.hash,
        content={} if purged else content,
        effective_at=row.effective_at,
        purged=Stub.model_validate(content) if purged else None,
    )


class AuditStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def append(self, event: AuditEvent) -> dict[str, Any]:
        """Chain ``event`` to the newest entry; the entry written (OpenAI's object)."""
        for attempt in range(APPEND_ATTEMPTS):
            entry_id = new_audit_id()
            content = _content(event, entry_id, int(datetime.now(UTC).timestamp()))
            committed, personal = commit(content, entry_id)
            try:
                async with self._sessions() as s, s.begin():
                    head = await s.scalar(
                        select(AuditLogEntry.hash).order_by(AuditLogEntry.seq.desc()).limit(1)
                    )
                    prev = head or GENESIS
                    s.add_all(personal)
                    s.add(
                        AuditLogEntry(
                            id=entry_id,
                            org_id=event.org_id,
                            project_id=event.project_id,
                            type=event.type,
                            effective_at=content["effective_at"],
                            actor_id=event.actor_id,
                            content=orjson.dumps(committed).decode(),
                            prev_hash=prev,
                            hash=link(prev, committed),
                        )
                    )
                return content
            except IntegrityError:  # another writer took this head: link to the new one
                await asyncio.sleep(0.001 * (attempt + 1))
        raise ServiceUnavailable("The audit log is busy; retry shortly.", retry_after=1)

    async def list(
        self,
        org_id: str,
        limit: int = 20,
        after: str | None = None,
        before: str | None = None,
        where: AuditFilter | None = None,
    ) -> Page[dict[str, Any]]:
        """An organisation's entries, newest first, filtered as OpenAI's list is."""
        check_limit(limit)
        f = where or AuditFilter()
        table = AuditLogEntry
        query = select(table).where(table.org_id == org_id, table.purged_at.is_(None))
        if f.gt is not None:
            query = query.where(table.effective_at > f.gt)
        if f.gte is not None:
            query = query.where(table.effective_at >= f.gte)
        if f.lt is not None:
            query = query.where(table.effective_at < f.lt)
        if f.lte is not None:
            query = query.where(table.effective_at <= f.lte)
        if f.project_ids:
            query = query.where(table.project_id.in_(f.project_ids))
        if f.event_types:
            query = query.where(table.type.in_(f.event_types))
        if f.actor_ids:
            query = query.where(table.actor_id.in_(f.actor_ids))
        async with self._sessions() as s:
            for name, cursor in (("after", after), ("before", before)):
                if cursor is None:
                    continue
                seq = await s.scalar(
                    select(table.seq).where(table.id == cursor, table.org_id == org_id)
                )
                if seq is None:
                    raise InvalidRequest(
                        f"Invalid {name!r}: {cursor!r} is not an id from this list.",
                        param=name,
                        code="invalid_value",
                    )
                query = query.where(table.seq < seq if name == "after" else table.seq > seq)
            if before is not None:  # the page just before the cursor, still newest first
                rows = list(await s.scalars(query.order_by(table.seq).limit(limit + 1)))
                more = len(rows) > limit
                rows = list(reversed(rows[:limit]))
            else:
                rows = list(await s.scalars(query.order_by(table.seq.desc()).limit(limit + 1)))
                more = len(rows) > limit
                rows = rows[:limit]
        data = await self.revealed(rows)
        if f.resource_ids:  # the target is inside the type's details
            wanted = set(f.resource_ids)
            data = [d for d in data if (d.get(d["type"]) or {}).get("id") in wanted]
        return Page(
            data=data,
            first_id=data[0]["id"] if data else None,
            last_id=data[-1]["id"] if data else None,
            has_more=more,
        )

    async def entries(self, org_id: str | None = None) -> AsyncIterator[ChainEntry]:
        """Every entry in chain order, stubs too; of one organisation (for export): its
        entries that retention has kept. In batches."""
        last = 0
        while True:
            query = select(AuditLogEntry).where(AuditLogEntry.seq > last)
            if org_id is not None:
                query = query.where(
                    AuditLogEntry.org_id == org_id, AuditLogEntry.purged_at.is_(None)
                )
            async with self._sessions() as s:
                rows = list(await s.scalars(query.order_by(AuditLogEntry.seq).limit(EXPORT_BATCH)))
            for row in rows:
                yield _entry(row)
            if len(rows) < EXPORT_BATCH:
                return
            last = rows[-1].seq

    async def revealed(self, rows: Sequence[AuditLogEntry]) -> builtins.list[dict[str, Any]]:
        """The entries as written, their personal values put back (erased: a tombstone)."""
        contents = [orjson.loads(r.content) for r in rows]
        wanted = set().union(*(digests(c) for c in contents)) if contents else set()
        values: dict[str, str] = {}
        if wanted:
            async with self._sessions() as s:
                found = await s.execute(
                    select(AuditPersonal.digest, AuditPersonal.value).where(
                        AuditPersonal.digest.in_(wanted)
                    )
                )
                values = {digest: value for digest, value in found.all()}
        return [reveal(c, values) for c in contents]

    async def mentioning(self, values: Sequence[str]) -> builtins.list[str]:
        """The ids of the entries that mention any of ``values`` (not yet erased)."""
        async with self._sessions() as s:
            found = await s.scalars(
                select(AuditPersonal.entry_id).where(AuditPersonal.value.in_(list(values)))
            )
            return sorted(set(found))

    async def erase(self, values: Sequence[str], only_actors: Sequence[str] | None = None) -> int:
        """Every mention of ``values`` gone from the log's readable entries (with
        ``only_actors``: in the entries those actors made; an address a whole office
        shares is erased from its leaver's entries, not from everyone's); the chain still
        verifies. How many mentions went."""
        if not values:
            return 0
        where = [AuditPersonal.value.in_(list(values))]
        if only_actors is not None:
            theirs = select(AuditLogEntry.id).where(AuditLogEntry.actor_id.in_(list(only_actors)))
            where.append(AuditPersonal.entry_id.in_(theirs))
        async with self._sessions.begin() as s:
            done = await s.execute(delete(AuditPersonal).where(*where))
        return int(done.rowcount)  # type: ignore[attr-defined]

    async def purge(self, org_id: str, retention_days: int, now: int) -> int:
        """An organisation's entries older than ``retention_days`` become stubs: their
        content and personal values go, their hashes stay (the chain still verifies).
        How many."""
        stub = Stub(purged_at=now, retention_days=retention_days)
        old = (
            AuditLogEntry.org_id == org_id,
            AuditLogEntry.effective_at <= now - retention_days * 86_400,
            AuditLogEntry.purged_at.is_(None),
        )
        async with self._sessions.begin() as s:
            await s.execute(
                delete(AuditPersonal).where(
                    AuditPersonal.entry_id.in_(select(AuditLogEntry.id).where(*old))
                )
            )
            done = await s.execute(
                update(AuditLogEntry)
                .where(*old)
                .values(content=stub.model_dump_json(), actor_id=None, purged_at=now)
            )
        return int(done.rowcount)  # type: ignore[attr-defined]

    async def compact(self) -> int:
        """Delete the stubs before the oldest kept entry (never the newest row: appends
        link to it), the last one's hash becoming the checkpoint verification starts
        from. How many went."""
        table = AuditLogEntry
        try:
            return await self._compact(table)
        except _Raced:  # another replica compacted meanwhile: its work stands, ours rolled back
            return 0

    async def _compact(self, table: type[AuditLogEntry]) -> int:
        async with self._sessions.begin() as s:
            mark = await s.get(AuditCheckpoint, 1, with_for_update=True)
            kept = await s.scalar(select(func.min(table.seq)).where(table.purged_at.is_(None)))
            newest = await s.scalar(select(func.max(table.seq)))
            if newest is None:
                return 0
            upto = min(kept or newest, newest) - 1
            last = (
                await s.execute(
                    select(table.seq, table.hash)
                    .where(table.seq <= upto)
                    .order_by(table.seq.desc())
                    .limit(1)
                )
            ).first()
            if last is None:
                return 0
            done = await s.execute(delete(table).where(table.seq <= last.seq))
            gone = int(done.rowcount)  # type: ignore[attr-defined]
            if mark is None:  # the first compaction (two at once: one IntegrityError)
                s.add(AuditCheckpoint(id=1, seq=last.seq, hash=last.hash, compacted=gone))
                return gone
            # moved only from where we read it: SQLite has no row locks, and a compaction
            # that read an older checkpoint must not write it back over a newer one
            moved = await s.execute(
                update(AuditCheckpoint)
                .where(AuditCheckpoint.id == 1, AuditCheckpoint.seq == mark.seq)
                .values(seq=last.seq, hash=last.hash, compacted=mark.compacted + gone)
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                raise _Raced
        return gone

    async def verify(self) -> Verdict:
        """The whole chain (it spans organisations: the operator's check), from the
        checkpoint of the compacted stubs if there is one. A walk that a compaction
        overtook (the checkpoint moved meanwhile) starts again."""
        for _ in range(VERIFY_ATTEMPTS):
            mark = await self._checkpoint()
            check = ChainCheck() if mark is None else ChainCheck(mark[0], mark[1])
            async for entry in self.entries():
                if not check.feed(entry):
                    break
            verdict = check.verdict()
            if verdict.ok or await self._checkpoint() == mark:
                return verdict
        return verdict

    async def _checkpoint(self) -> tuple[str, int] | None:
        async with self._sessions() as s:
            mark = await s.get(AuditCheckpoint, 1)
            return None if mark is None else (mark.hash, mark.compacted)
