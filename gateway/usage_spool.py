"""A gateway replica's usage spool: what it owes the ledger, on local disk until it is paid.

A usage record lives in the replica's memory from the moment a request settles until the
recorder actor commits it (50 ms, or longer while the recorder restarts). A replica that
is SIGKILLed in that window took those records with it, and upstream calls it had
started left no trace at all. So every record is also appended to a spool file before
the client sees the last byte, and every upstream call leaves a line when it starts:

- ``s`` — a call started: a full record with status ``interrupted`` and no tokens yet,
- ``p`` — a stream's progress: completion tokens and cost so far (every ``PROGRESS_EVERY``
  chunks),
- ``f`` — the call's final record, the one that is shipped.

Each line is one ``write(2)`` on an ``O_APPEND`` descriptor with no user-space buffer, so
it is in the kernel once the call returns and survives the death of the process (not of
the machine: there is no fsync per request). A replica holds an exclusive ``flock`` on
its lock file for as long as it lives; the kernel releases it when the process dies,
however it dies. Any replica on the node that can take a lock it does not own has found
a dead owner: it takes that owner's final records, turns each call that started and never
ended into an ``interrupted`` record with the tokens known so far, ships them through its
own spool and deletes the dead owner's files. Records are keyed by the platform's request
id and written with ``ON CONFLICT DO NOTHING``, so a record shipped twice (acknowledged,
then replayed because its segment was not yet deleted) is stored once.

Segments rotate at ``segment_bytes``; a segment is deleted once every final record in it
has been acknowledged and every call that started in it has ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from forge.usage import UsageEvent

log = logging.getLogger(__name__)

PROGRESS_EVERY = 16  # stream chunks between progress lines
LOCK_SUFFIX = ".lock"
SEGMENT_SUFFIX = ".spool"


@dataclass
class _Segment:
    path: Path
    fd: int
    size: int = 0
    finals_end: int = 0  # cumulative count of final records once this segment's last is in
    open_starts: int = 0


@dataclass
class Orphans:
    """What a dead replica's spool still owed: records to ship, and its files to delete
    once they are safely in the taker's own spool."""

    owner: str
    records: list[UsageEvent]
    lock_fd: int
    files: list[Path] = field(default_factory=list)


def _json(event: UsageEvent) -> bytes:
    """orjson over the fields: a quarter of pydantic's ``model_dump_json`` per call, and
    read back by ``model_validate_json`` all the same."""
    return orjson.dumps(event.__dict__)


def _owner_of(path: Path) -> str:
    return path.name.split(".", 1)[0]


class UsageSpool:
    def __init__(self, directory: Path, segment_bytes: int = 4 * 1024 * 1024) -> None:
        self.directory = directory
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._open: dict[str, _Segment] = {}
        self._finals = 0
        self._acked = 0
        self._next_segment = 0
        self._lock_fd = -1
        self.write_errors = 0

    # --- this replica's own spool -------------------------------------------------------

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = self.directory / f"{self.owner}{LOCK_SUFFIX}"
        self._lock_fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._rotate()

    def started(self, event: UsageEvent) -> None:
        """An upstream call began (a fallback's next attempt overwrites the trace)."""
        segment = self._write(b"s", _json(event))
        previous = self._open.get(event.request_id)
        if previous is not None:
            previous.open_starts -= 1
        if segment is not None:
            segment.open_starts += 1
            self._open[event.request_id] = segment

    def progress(self, request_id: str, completion_tokens: int, cost_usd: float) -> None:
        self._write(b"p", orjson.dumps([request_id, completion_tokens, cost_usd]))

    def finished(self, event: UsageEvent) -> None:
        """The call's record: from here the spool owes it to the ledger."""
        segment = self._write(b"f", _json(event))
        self._finals += 1
        if segment is not None:
            segment.finals_end = self._finals
        started = self._open.pop(event.request_id, None)
        if started is not None:
            started.open_starts -= 1
        if segment is not None and segment.size >= self._segment_bytes:
            self._rotate()
        self._reap()

    def acknowledged(self, count: int) -> None:
        """The oldest ``count`` final records are committed (they are shipped in order)."""
        self._acked += count
        self._reap()

    def close(self) -> None:
        """Stop spooling; files still owed stay on disk for a successor to replay."""
        self._reap(include_current=True)
        for segment in self._segments:
            os.close(segment.fd)
        self._segments.clear()
        if self._lock_fd >= 0:
            if not any(self.directory.glob(f"{self.owner}.*{SEGMENT_SUFFIX}")):
                (self.directory / f"{self.owner}{LOCK_SUFFIX}").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = -1

    @property
    def owed(self) -> int:
        """Final records written and not yet acknowledged."""
        return self._finals - self._acked

    def _write(self, kind: bytes, payload: bytes) -> _Segment | None:
        segment = self._segments[-1] if self._segments else None
        if segment is None:
            return None
        line = kind + payload + b"\n"
        try:
            os.write(segment.fd, line)
        except OSError as exc:  # disk full: serve on, say so (readiness, forge status)
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 1000 == 0:
                log.error("usage spool write failed (%d so far): %s", self.write_errors, exc)
            return None
        segment.size += len(line)
        return segment

    def _rotate(self) -> None:
        path = self.directory / f"{self.owner}.{self._next_segment:06d}{SEGMENT_SUFFIX}"
        self._next_segment += 1
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        self._segments.append(_Segment(path, fd, finals_end=self._finals))

    def _reap(self, include_current: bool = False) -> None:
        last = len(self._segments) if include_current else len(self._segments) - 1
        kept = []
        for i, segment in enumerate(self._segments):
            done = segment.open_starts == 0 and segment.finals_end <= self._acked
            if i < last and done:
                os.close(segment.fd)
                segment.path.unlink(missing_ok=True)
            else:
                kept.append(segment)
        self._segments = kept

    # --- other replicas' spools ---------------------------------------------------------

    def take_orphans(self) -> list[Orphans]:
        """The spools of dead replicas on this node (their locks are free), read."""
        found: list[Orphans] = []
        if not self.directory.is_dir():
            return found
        for lock in sorted(self.directory.glob(f"*{LOCK_SUFFIX}")):
            owner = _owner_of(lock)
            if owner == self.owner:
                continue
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue  # another replica took it meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # alive
                continue
            files = sorted(self.directory.glob(f"{owner}.*{SEGMENT_SUFFIX}"))
            found.append(Orphans(owner, read_records(files), fd, [*files, lock]))
        return found

    def release_orphans(self, orphans: Orphans) -> None:
        """Delete a dead replica's files: their records are in this spool now."""
        for path in orphans.files:
            path.unlink(missing_ok=True)
        os.close(orphans.lock_fd)


def read_records(files: list[Path]) -> list[UsageEvent]:
    """The records a spool owes: its final records, and for each call that started and
    never ended an ``interrupted`` record with the tokens of its last progress line. A
    torn last line (the process died mid-write) is skipped."""
    finals: dict[str, UsageEvent] = {}
    starts: dict[str, UsageEvent] = {}
    progress: dict[str, tuple[int, float]] = {}
    for path in files:
        with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    continue
                kind, payload = line[:1], line[1:]
                try:
                    if kind == b"f":
                        event = UsageEvent.model_validate_json(payload)
                        finals[event.request_id] = event
                    elif kind == b"s":
                        event = UsageEvent.model_validate_json(payload)
                        starts[event.request_id] = event
                    elif kind == b"p":
                        request_id, tokens, cost = orjson.loads(payload)
                        progress[request_id] = (int(tokens), float(cost))
                except ValueError:
                    log.warning("skipped an unreadable usage spool line in %s", path.name)
    records = list(finals.values())
    for request_id, start in starts.items():
        if request_id in finals:
            continue
        tokens, cost = progress.get(request_id, (0, 0.0))
        records.append(
            start.model_copy(
                update={
                    "status": "interrupted",
                    "completion_tokens": tokens,
                    "cost_usd": cost,
                    "usage_estimated": True,
                }
            )
        )
    return records
