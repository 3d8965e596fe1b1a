"""Files (OpenAI's ``/v1/files``): metadata in the database, bytes in the file storage.

A file belongs to the project of the key that uploaded it; any key of that project may
list, read and delete it, and to every other key it does not exist (404, whether it
exists elsewhere or not). The row is written only after the bytes are committed, and
removed before them, so a listed file always has its content.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.config import FilesConfig
from forge.db.schema import BatchRow, FineTuneJob, StoredFile, utcnow
from forge.errors import Conflict, InvalidRequest, NotFound
from forge.files.storage import FileStorage
from forge.files.upload import ReceivedFile, UploadReader, purpose_of
from forge.files.validation import FileCheck, JsonlValidator, Purpose
from forge.tenancy.objects import Page, unix
from forge.tenancy.paging import MAX_PAGE, Order, as_page, page_rows

SHOWN_ERRORS = 5
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 30 * 86400  # OpenAI's bounds for expires_after


class FileObject(BaseModel):
    """OpenAI's ``OpenAIFile``."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    # left out when there is none: OpenAI's schema has them as integer and string
    expires_at: int | None = Field(None, exclude_if=lambda v: v is None)
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: str | None = Field(None, exclude_if=lambda v: v is None)


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


def file_object(row: StoredFile) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=unix(row.created_at) or 0,
        expires_at=unix(row.expires_at),
        filename=row.filename,
        purpose=row.purpose,
    )


def rejected(check: FileCheck) -> InvalidRequest:
    """A 400 that names the lines: the first few errors, and how many there were."""
    shown = "; ".join(f"line {e.line}: {e.message}" for e in check.errors[:SHOWN_ERRORS])
    more = check.error_count - min(check.error_count, SHOWN_ERRORS)
    suffix = f"; and {more} more" if more else ""
    return InvalidRequest(
        f"The file is not valid for purpose '{check.purpose}': {shown}{suffix}.",
        param="file",
        code="invalid_file_format",
    )


def expiry(fields: dict[str, str], now: datetime) -> datetime | None:
    """``expires_after[anchor]=created_at`` and ``expires_after[seconds]`` (1 h to 30 d)."""
    seconds = fields.get("expires_after[seconds]")
    anchor = fields.get("expires_after[anchor]")
    if seconds is None and anchor is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "Invalid 'expires_after[anchor]': the only anchor is 'created_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    try:
        value = int(seconds or "")
    except ValueError:
        value = 0
    if not MIN_EXPIRY_S <= value <= MAX_EXPIRY_S:
        raise InvalidRequest(
            f"Invalid 'expires_after[seconds]': expected {MIN_EXPIRY_S} to {MAX_EXPIRY_S}.",
            param="expires_after.seconds",
            code="invalid_value",
        )
    return now + timedelta(seconds=value)


class FileStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], storage: FileStorage, max_bytes: int
    ) -> None:
        self._sessions = sessions
        self.storage = storage
        self.max_bytes = max_bytes

    @classmethod
    def on(
        cls, sessions: async_sessionmaker[AsyncSession], config: FilesConfig, data_dir: Path
    ) -> FileStore:
        """The store for ``config``: its storage URL, or a folder under ``data_dir``."""
        root = config.storage or str((data_dir / "files").resolve())
        return cls(sessions, FileStorage(root), config.max_bytes)

    async def upload(
        self, org_id: str, project_id: str, content_type: str, body: AsyncIterator[bytes]
    ) -> FileObject:
        """Store the upload, validate it for its purpose, and record it; a file that
        fails validation is removed again and answered with a 400 naming its lines."""
        file_id = "file-" + uuid.uuid4().hex[:24]
        location = f"{project_id}/{file_id}"
        reader = UploadReader(
            content_type, lambda: self.storage.open_writer(location), max_bytes=self.max_bytes
        )
        received = await reader.read(body)
        try:
            purpose = purpose_of(received.fields.get("purpose"))
            check = received.check or await self._check_stored(purpose, location)
            if not check.ok:
                raise rejected(check)
            now = utcnow()
            row = self._row(file_id, org_id, project_id, location, received, check, now)
            async with self._sessions.begin() as s:
                s.add(row)
        except BaseException:
            await self.storage.delete(location)
            raise
        return file_object(row)

    async def save_generated(
        self,
        org_id: str,
        project_id: str,
        file_id: str,
        filename: str,
        purpose: str,
        blocks: AsyncIterator[bytes],
    ) -> FileObject:
        """A file the platform writes (a batch's output): its bytes, then its row. The
        same ``file_id`` again (a finalizer that died half way, retried) writes it anew."""
        location = f"{project_id}/{file_id}"
        writer = await self.storage.open_writer(location)
        digest, size = hashlib.sha256(), 0
        try:
            async for block in blocks:
                digest.update(block)
                size += len(block)
                await writer.write(block)
            await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        row = StoredFile(
            id=file_id,
            org_id=org_id,
            project_id=project_id,
            filename=filename,
            purpose=purpose,
            bytes=size,
            sha256=digest.hexdigest(),
            format="jsonl",
            lines=None,
            location=location,
            created_at=utcnow(),
        )
        async with self._sessions.begin() as s:
            await s.execute(delete(StoredFile).where(StoredFile.id == file_id))
            s.add(row)
        return file_object(row)

    async def save_training(
        self, org_id: str, project_id: str, filename: str, blocks: AsyncIterator[bytes]
    ) -> StoredFile:
        """A ``fine-tune`` file the platform assembles (a retraining's data), validated
        like an upload, so a job reads it like one."""
        file_id = "file-" + uuid.uuid4().hex[:24]
        await self.save_generated(org_id, project_id, file_id, filename, "fine-tune", blocks)
        location = f"{project_id}/{file_id}"
        check = await self._check_stored("fine-tune", location)
        if not check.ok:
            await self.delete(file_id, project_id)
            raise rejected(check)
        async with self._sessions.begin() as s:
            row = await self._row_of(s, file_id, project_id)
            row.format, row.lines = check.format, check.lines
        return row

    @staticmethod
    def _row(
        file_id: str,
        org_id: str,
        project_id: str,
        location: str,
        received: ReceivedFile,
        check: FileCheck,
        now: datetime,
    ) -> StoredFile:
        return StoredFile(
            id=file_id,
            org_id=org_id,
            project_id=project_id,
            filename=received.filename,
            purpose=check.purpose,
            bytes=received.size,
            sha256=received.sha256,
            format=check.format,
            lines=check.lines,
            location=location,
            created_at=now,
            expires_at=expiry(received.fields, now),
        )

    async def _check_stored(self, purpose: Purpose, location: str) -> FileCheck:
        validator = JsonlValidator(purpose)
        async for block in self.storage.read(location):
            validator.feed(block)
        return validator.finish()

    @staticmethod
    def _live(project_id: str) -> list[ColumnElement[bool]]:
        """The project's files that have not expired (an expired file is gone for every
        call before anything removes its bytes)."""
        unexpired = or_(StoredFile.expires_at.is_(None), StoredFile.expires_at > utcnow())
        return [StoredFile.project_id == project_id, unexpired]

    async def _row_of(self, s: AsyncSession, file_id: str, project_id: str) -> StoredFile:
        row = await s.scalar(
            select(StoredFile).where(StoredFile.id == file_id, *self._live(project_id))
        )
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return row

    async def stored(self, file_id: str, project_id: str) -> StoredFile:
        """The file's row (where its bytes are, what validation found)."""
        async with self._sessions() as s:
            return await self._row_of(s, file_id, project_id)

    async def get(self, file_id: str, project_id: str) -> FileObject:
        async with self._sessions() as s:
            return file_object(await self._row_of(s, file_id, project_id))

    async def content(
        self, file_id: str, project_id: str
    ) -> tuple[FileObject, AsyncIterator[bytes]]:
        """The file's metadata and its bytes, streamed from storage."""
        async with self._sessions() as s:
            row = await self._row_of(s, file_id, project_id)
        return file_object(row), self.storage.read(row.location)

    async def list(
        self,
        project_id: str,
        purpose: str | None,
        limit: int,
        after: str | None,
        order: Order,
    ) -> Page[FileObject]:
        # OpenAI's default and cap are 10,000 files a page; pages here are at most
        # MAX_PAGE, and ``has_more`` with ``after`` go on (the SDKs' iterators follow it)
        limit = min(limit, MAX_PAGE)
        where = self._live(project_id)
        if purpose is not None:
            where.append(StoredFile.purpose == purpose)
        async with self._sessions() as s:
            rows, more = await page_rows(s, StoredFile, where, limit, after, order)
        return as_page([file_object(r) for r in rows], more)

    async def delete(self, file_id: str, project_id: str) -> FileDeleted:
        """Remove the file, unless an unfinished fine-tuning job or batch reads it (409)."""
        async with self._sessions.begin() as s:
            row = await self._row_of(s, file_id, project_id)
            user = await s.scalar(_unfinished_job_reading(file_id))
            user = user or await s.scalar(_unfinished_batch_reading(file_id))
            if user is not None:
                what = "fine-tuning job" if user.startswith("ftjob") else "batch"
                raise Conflict(
                    f"File {file_id} is in use by {what} {user}; cancel it or wait for it "
                    "to finish.",
                    param="file_id",
                    code="file_in_use",
                )
            await s.execute(delete(StoredFile).where(StoredFile.id == row.id))
        await self.storage.delete(row.location)
        return FileDeleted(id=file_id)


UNFINISHED_JOB = ("validating_files", "queued", "running", "paused")
FINISHED_BATCH = ("failed", "completed", "expired", "cancelled")


def _unfinished_job_reading(file_id: str) -> Select[str]:
    reads = or_(FineTuneJob.training_file == file_id, FineTuneJob.validation_file == file_id)
    return select(FineTuneJob.id).where(reads, FineTuneJob.status.in_(UNFINISHED_JOB)).limit(1)


def _unfinished_batch_reading(file_id: str) -> Select[str]:
    return (
        select(BatchRow.id)
        .where(BatchRow.input_file_id == file_id, BatchRow.status.not_in(FINISHED_BATCH))
        .limit(1)
    )
