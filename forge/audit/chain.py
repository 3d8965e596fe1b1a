"""The hash chain: each entry's hash covers its content and the hash before it, so an
entry changed in the database no longer matches its hash, and one deleted breaks the
link of the entry after it. Deleting the newest entries leaves a shorter chain that is
still whole: ``verify`` reports the head (count and hash) for the operator to keep
elsewhere and compare (``forge audit verify --expect-head``).

Retention keeps the chain whole: an entry past its organisation's period becomes a
*stub* (its content and personal values deleted, its hashes kept: the next entry's hash
still pins them), and a leading run of stubs is compacted into a *checkpoint* (the last
deleted hash), where verification then starts. A stub must say it was purged after its
period ended; one purged early (an entry deleted by hand made to look purged) fails."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import BaseModel

GENESIS = "0" * 64


def canonical(content: dict[str, Any]) -> bytes:
    """The bytes an entry's hash covers: its content as JSON with sorted keys."""
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def link(prev_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(content)).hexdigest()


class Stub(BaseModel):
    """What a purged entry keeps besides its hashes: when and under which period."""

    purged_at: int
    retention_days: int

    def early(self, effective_at: int) -> bool:
        return effective_at + self.retention_days * 86_400 > self.purged_at


class ChainEntry(BaseModel):
    seq: int
    id: str
    prev_hash: str
    hash: str
    content: dict[str, Any]
    effective_at: int = 0
    purged: Stub | None = None  # set: ``content`` is gone


class Verdict(BaseModel):
    """``ok`` when every entry matches its hash and links to the one before it."""

    ok: bool
    entries: int
    head_hash: str
    first_bad_id: str | None = None
    problem: str | None = None
    purged: int = 0  # of ``entries``: stubs, whose content retention deleted
    compacted: int = 0  # stubs before the checkpoint the check started from


class ChainCheck:
    """Walks the chain in order, one entry at a time (a log of any length in constant
    memory); stops at the first broken link or changed entry."""

    def __init__(self, start: str = GENESIS, compacted: int = 0) -> None:
        self.prev, self.count, self.purged, self.compacted = start, 0, 0, compacted
        self.bad: Verdict | None = None

    def feed(self, entry: ChainEntry) -> bool:
        """False once the chain is found broken (at this entry or before)."""
        if self.bad is not None:
            return False
        problem = None
        if entry.prev_hash != self.prev:
            problem = "the entry before it was deleted or changed (broken link)"
        elif entry.purged is not None:
            if entry.purged.early(entry.effective_at):
                problem = "its content was deleted before its retention period ended"
        elif link(self.prev, entry.content) != entry.hash:
            problem = "its content was changed after it was written (hash mismatch)"
        if problem is not None:
            self.bad = self._verdict(ok=False, first_bad_id=entry.id, problem=problem)
            return False
        self.prev, self.count = entry.hash, self.count + 1
        self.purged += entry.purged is not None
        return True

    def verdict(self) -> Verdict:
        return self.bad or self._verdict(ok=True)

    def _verdict(self, **outcome: Any) -> Verdict:
        return Verdict(
            entries=self.count,
            head_hash=self.prev,
            purged=self.purged,
            compacted=self.compacted,
            **outcome,
        )


def verify(entries: Iterable[ChainEntry]) -> Verdict:
    check = ChainCheck()
    for entry in entries:
        if not check.feed(entry):
            break
    return check.verdict()
