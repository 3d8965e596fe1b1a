"""Key changes pushed to every gateway replica: the feed the directory keeps.

A replica caches verified keys for ``auth_cache_ttl_s``; a revocation (or a suspended
organisation, an archived project, a deleted service account) must not wait that out.
Whoever changes keys publishes the ids (None: "forget every cached key"); each replica
holds one long-poll on the feed (``since``), which answers as soon as something is
published, so every replica forgets within a round trip of the change.

The feed is in memory: a restarted directory is a new feed (a new ``feed_id``), and a
replica that sees a feed it does not know, or has fallen behind the kept history,
forgets everything, which is always safe.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque

from pydantic import BaseModel

HISTORY = 1024  # publications kept for replicas that come back from a slow poll


class KeyChanges(BaseModel):
    feed_id: str
    epoch: int
    key_ids: list[str] | None  # None: forget every cached key


class ChangeFeed:
    def __init__(self) -> None:
        self.feed_id = uuid.uuid4().hex
        self.epoch = 0
        self._log: deque[tuple[int, list[str] | None]] = deque(maxlen=HISTORY)
        self._published: asyncio.Event | None = None

    def publish(self, key_ids: list[str] | None) -> int:
        self.epoch += 1
        self._log.append((self.epoch, None if key_ids is None else list(key_ids)))
        if self._published is not None:
            self._published.set()
            self._published = None
        return self.epoch

    async def since(self, feed_id: str | None, epoch: int, timeout_s: float) -> KeyChanges:
        """What changed after ``epoch`` of feed ``feed_id``, waiting up to ``timeout_s``
        for something to; a caller new to this feed learns its epoch (and, if it knew
        another feed, to forget everything)."""
        if feed_id != self.feed_id:
            return KeyChanges(
                feed_id=self.feed_id, epoch=self.epoch, key_ids=None if feed_id else []
            )
        if epoch >= self.epoch:
            if self._published is None:
                self._published = asyncio.Event()
            try:
                await asyncio.wait_for(self._published.wait(), timeout_s)
            except TimeoutError:
                return KeyChanges(feed_id=self.feed_id, epoch=self.epoch, key_ids=[])
        missed = [ids for at, ids in self._log if at > epoch]
        complete = bool(self._log) and self._log[0][0] <= epoch + 1
        if not complete or any(ids is None for ids in missed):
            return KeyChanges(feed_id=self.feed_id, epoch=self.epoch, key_ids=None)
        changed = sorted({key for ids in missed for key in ids or ()})
        return KeyChanges(feed_id=self.feed_id, epoch=self.epoch, key_ids=changed)
