"""A gateway replica's side of the key-change feed (``forge.key_changes``): one
long-poll at a time on the directory; what it hears is forgotten from the key cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from forge.key_changes import KeyChanges
from gateway.auth import KeyVerifier

log = logging.getLogger(__name__)
Poll = Callable[[str | None, int, float], Awaitable[KeyChanges]]
POLL_S = 10.0  # how long one poll waits for a change
RETRY_S = 1.0


class KeyChangeWatcher:
    def __init__(self, poll: Poll, verifier: KeyVerifier) -> None:
        self._poll = poll
        self._verifier = verifier
        self._feed: str | None = None
        self._epoch = 0

    async def run(self) -> None:
        while True:
            try:
                changes = await self._poll(self._feed, self._epoch, POLL_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the directory restarting: changes may be missed
                log.warning("key-change poll failed: %s", type(exc).__name__)
                self._verifier.forget()
                self._feed = None
                await asyncio.sleep(RETRY_S)
                continue
            self.apply(changes)

    def apply(self, changes: KeyChanges) -> None:
        if changes.key_ids is None:
            self._verifier.forget()
        else:
            for key_id in changes.key_ids:
                self._verifier.forget(key_id)
        self._feed, self._epoch = changes.feed_id, changes.epoch
