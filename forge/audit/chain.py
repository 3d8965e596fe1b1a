"""The hash chain: each entry's hash covers its content and the hash before it, so an
entry changed in the database no longer matches its hash, and one deleted breaks the
link of the entry after it. Deleting the newest entries leaves a shorter chain that is
still whole: ``verify`` reports the head (count and hash) for the operator to keep
elsewhere and compare (``forge audit verify --expect-head``)."""

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


class ChainEntry(BaseModel):
    seq: int
    id: str
    prev_hash: str
    hash: str
    content: dict[str, Any]


class Verdict(BaseModel):
    """``ok`` when every entry matches its hash and links to the one before it."""

    ok: bool
    entries: int
    head_hash: str
    first_bad_id: str | None = None
    problem: str | None = None


class ChainCheck:
    """Walks the chain in order, one entry at a time (a log of any length in constant
    memory); stops at the first broken link or changed entry."""

    def __init__(self) -> None:
        self.prev, self.count = GENESIS, 0
        self.bad: Verdict | None = None

    def feed(self, entry: ChainEntry) -> bool:
        """False once the chain is found broken (at this entry or before)."""
        if self.bad is not None:
            return False
        problem = None
        if entry.prev_hash != self.prev:
            problem = "the entry before it was deleted or changed (broken link)"
        elif link(self.prev, entry.content) != entry.hash:
            problem = "its content was changed after it was written (hash mismatch)"
        if problem is not None:
            self.bad = Verdict(
                ok=False,
                entries=self.count,
                head_hash=self.prev,
                first_bad_id=entry.id,
                problem=problem,
            )
            return False
        self.prev, self.count = entry.hash, self.count + 1
        return True

    def verdict(self) -> Verdict:
        return self.bad or Verdict(ok=True, entries=self.count, head_hash=self.prev)


def verify(entries: Iterable[ChainEntry]) -> Verdict:
    check = ChainCheck()
    for entry in entries:
        if not check.feed(entry):
            break
    return check.verdict()
