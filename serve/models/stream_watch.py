"""Ends the streams of a batching loop that stopped without answering them.

Our loops answer their rows when they crash, but a loop can also end silently (stopped,
or transformers' continuous batching dying in its own thread), and its queued requests
would then wait forever. Guarding each wait with ``asyncio.wait_for`` costs a task and a
timer per streamed token (31% of the engine's per-token time at 128 streams, profiled);
one watchdog task per event loop checks that loop's streams once a second instead, and
exits when none is left.

A loop seen stopped twice in a row gets its streams ended (once each): results it
delivered just before stopping are queued by then, so they are read first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from forge.errors import ServiceUnavailable

CHECK_EVERY_S = 1.0
STOPPED = object()  # put in a stream's queue when its loop is found stopped


class StreamWatch:
    def __init__(self) -> None:
        # Per event loop: its watchdog and its streams (queue -> batching loop). Each
        # task touches only its own loop's queues (asyncio queues are not thread-safe).
        self._loops: dict[asyncio.AbstractEventLoop, _Watched] = {}

    def add(self, results: asyncio.Queue[Any], batch: Any) -> None:
        """Watch ``batch`` (anything with ``is_running()``) for the stream ``results``."""
        loop = asyncio.get_running_loop()
        watched = self._loops.get(loop)
        if watched is None:
            watched = self._loops[loop] = _Watched()
            watched.task = loop.create_task(self._watch(loop, watched))
        watched.streams[results] = batch

    def discard(self, results: asyncio.Queue[Any]) -> None:
        watched = self._loops.get(asyncio.get_running_loop())
        if watched is not None:
            watched.streams.pop(results, None)

    async def _watch(self, loop: asyncio.AbstractEventLoop, watched: _Watched) -> None:
        suspects: set[int] = set()  # batching loops seen stopped at the last check
        try:
            while watched.streams:
                await asyncio.sleep(CHECK_EVERY_S)
                stopped = {id(b) for b in watched.streams.values() if not b.is_running()}
                for results, batch in list(watched.streams.items()):
                    if id(batch) in stopped & suspects:
                        results.put_nowait(STOPPED)
                        del watched.streams[results]
                suspects = stopped
        finally:
            if self._loops.get(loop) is watched:
                del self._loops[loop]


class _Watched:
    """One event loop's watchdog task and streams."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None  # held: a task nobody holds may vanish
        self.streams: dict[asyncio.Queue[Any], Any] = {}


async def next_result(results: asyncio.Queue[Any]) -> Any:
    """The stream's next result; a 503 if its batching loop stopped."""
    result = results.get_nowait() if not results.empty() else await results.get()
    if result is STOPPED:
        raise ServiceUnavailable(
            "The model engine stopped; its replica is being replaced.", retry_after=5
        )
    return result
