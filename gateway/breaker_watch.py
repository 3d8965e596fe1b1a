"""A gateway replica's side of the shared breakers (``forge.routing.breakers``): it
publishes the breakers it opens and closes, and holds one long-poll on the board to take
the others' as its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from forge.routing.breakers import BreakerBoard, Breakers, Opening

log = logging.getLogger(__name__)
POLL_S = 10.0  # how long one poll waits for a change
RETRY_S = 1.0


class BreakerSharing:
    def __init__(self, board: BreakerBoard) -> None:
        self._board = board
        self._pending: set[asyncio.Task[bool]] = set()
        self.breakers: Breakers | None = None
        # told when this replica's publication changed the board (opened or closed a
        # breaker for everyone), so that the change is announced once, not per replica
        self.on_change: Callable[[str, Opening | None], None] | None = None

    def publish(self, key: str, opening: Opening | None) -> None:
        """``Breakers``' publish hook: sent in the background, never waited on (a lost
        publication costs the other replicas their own discovery, nothing more)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        call = (
            self._board.clear(key)
            if opening is None
            else self._board.trip(key, opening.until, opening.reason, opening.rate_limited)
        )
        task = loop.create_task(call)
        self._pending.add(task)
        task.add_done_callback(lambda done: self._done(done, key, opening))

    def _done(self, task: asyncio.Task[bool], key: str, opening: Opening | None) -> None:
        self._pending.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.warning("publishing a breaker failed: %s", type(task.exception()).__name__)
        elif task.result() and self.on_change is not None:
            self.on_change(key, opening)

    async def run(self) -> None:
        assert self.breakers is not None, "attach the replica's breakers first"
        feed: str | None = None
        epoch = 0
        while True:
            try:
                news = await self._board.breakers_since(feed, epoch, POLL_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the board restarting: what it said may be stale
                log.warning("breaker poll failed: %s", type(exc).__name__)
                self.breakers.forget_shared()
                feed = None
                await asyncio.sleep(RETRY_S)
                continue
            if feed is not None and news.feed_id != feed:
                self.breakers.forget_shared()
            self.breakers.apply(news)
            feed, epoch = news.feed_id, news.epoch
