"""Ends the streams of a batching loop that stopped without answering them.

Our loops answer their rows when they crash, but a loop can also end silently (stopped,
or transformers' continuous batching dying in its own thread), and its queued requests
would then wait forever. Guarding each wait with ``asyncio.wait_for`` costs a task and a
timer per streamed token (31% of the engine's per-token time at 128 streams, profiled);
one watchdog task per event loop checks every live stream's loop once a second instead,
and exits when no stream is left.
"""

from __future__ import annotations

import asyncio
from typing import Any

from forge.errors import ServiceUnavailable

CHECK_EVERY_S = 1.0
STOPPED = object()  # put in a stream's queue when its loop is found stopped


class StreamWatch:
    def __init__(self) -> None:
        self._streams: dict[asyncio.Queue[Any], Any] = {}  # queue -> its batching loop
        self._task: asyncio.Task[None] | None = None

    def add(self, results: asyncio.Queue[Any], batch: Any) -> None:
        """Watch ``batch`` (anything with ``is_running()``) for the stream ``results``."""
        self._streams[results] = batch
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._watch())

    def discard(self, results: asyncio.Queue[Any]) -> None:
        self._streams.pop(results, None)

    async def _watch(self) -> None:
        while self._streams:
            await asyncio.sleep(CHECK_EVERY_S)
            for results, batch in list(self._streams.items()):
                if not batch.is_running():
                    results.put_nowait(STOPPED)


async def next_result(results: asyncio.Queue[Any]) -> Any:
    """The stream's next result; a 503 if its batching loop stopped."""
    result = results.get_nowait() if not results.empty() else await results.get()
    if result is STOPPED:
        raise ServiceUnavailable(
            "The model engine stopped; its replica is being replaced.", retry_after=5
        )
    return result
