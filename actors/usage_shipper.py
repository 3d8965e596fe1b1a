"""Gateway-side usage buffer: records are kept until the recorder acknowledges them.

Requests never wait on the database: a record is appended to a local list, and a
background task ships batches. A batch leaves the buffer only after the recorder has
committed it; if the recorder dies mid-call the batch is sent again once it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from forge.usage import UsageEvent

log = logging.getLogger(__name__)

Sink = Callable[[list[UsageEvent]], Awaitable[int]]


class UsageShipper:
    def __init__(self, sink: Sink, *, flush_interval_s: float = 0.05, max_batch: int = 500) -> None:
        self._sink = sink
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._buffer: list[UsageEvent] = []
        self._task: asyncio.Task[None] | None = None
        self._shipping = asyncio.Lock()  # one shipment at a time: each removes its own batch
        self.shipped = 0
        self.failures = 0

    def add(self, event: UsageEvent) -> None:
        """Accept a record; from here on it is the shipper's to deliver."""
        self._buffer.append(event)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def _run(self) -> None:
        backoff = self._interval
        while True:
            await asyncio.sleep(backoff)
            if not self._buffer:
                continue
            shipped = await self._ship_once()
            backoff = self._interval if shipped else min(max(backoff * 2, 0.1), 2.0)

    async def _ship_once(self) -> bool:
        async with self._shipping:
            batch = self._buffer[: self._max_batch]
            if not batch:
                return True
            try:
                await self._sink(batch)
            except Exception as exc:  # the recorder is restarting, or the DB is down
                self.failures += 1
                log.warning("usage shipment of %d records failed, will retry: %r", len(batch), exc)
                return False
            del self._buffer[: len(batch)]  # new records are only ever appended behind it
            self.shipped += len(batch)
            return True

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Ship everything now (shutdown, tests); True when the buffer is empty."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._buffer and asyncio.get_running_loop().time() < deadline:
            if not await self._ship_once():
                await asyncio.sleep(0.1)
        return not self._buffer

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
