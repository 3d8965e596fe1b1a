"""Gateway-side usage buffer: records are kept until the recorder acknowledges them.

Requests never wait on the database: a record is appended to a local list (and, with a
spool, to the replica's spool file on local disk), and a background task ships batches.
A batch leaves the buffer only after the recorder has committed it; if the recorder dies
mid-call the batch is sent again once it is back. The same task replays the spools of
dead replicas on this node (``gateway/usage_spool.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from forge.usage import UsageEvent
from gateway.usage_spool import UsageSpool

log = logging.getLogger(__name__)

Sink = Callable[[list[UsageEvent]], Awaitable[int]]


class UsageShipper:
    def __init__(
        self,
        sink: Sink,
        *,
        spool: UsageSpool | None = None,
        flush_interval_s: float = 0.05,
        max_batch: int = 500,
        recover_interval_s: float = 5.0,
        unready_after_s: float = 10.0,
    ) -> None:
        self._sink = sink
        self.spool = spool
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._recover_interval = recover_interval_s
        self._unready_after = unready_after_s
        self._buffer: list[UsageEvent] = []
        self._task: asyncio.Task[None] | None = None
        self._shipping = asyncio.Lock()  # one shipment at a time: each removes its own batch
        self.shipped = 0
        self.failures = 0
        self.recovered = 0
        self._failing_since: float | None = None
        self._last_error = ""

    def start(self) -> None:
        """Start shipping (and replaying dead replicas' spools) in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def started(self, event: UsageEvent) -> None:
        """An upstream call began: leave a trace that outlives this process."""
        if self.spool is not None:
            self.spool.started(event)

    def progress(self, request_id: str, completion_tokens: int, cost_usd: float) -> None:
        if self.spool is not None:
            self.spool.progress(request_id, completion_tokens, cost_usd)

    def add(self, event: UsageEvent) -> None:
        """Accept a record; from here on it is the shipper's to deliver."""
        if self.spool is not None:
            self.spool.finished(event)
        self._buffer.append(event)
        if self._task is None:
            self.start()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def failing_for_s(self) -> float:
        """How long shipments have been failing without a success in between (0: not)."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def healthy(self) -> bool:
        spool_ok = self.spool is None or self.spool.write_errors == 0
        return self.failing_for_s() < self._unready_after and spool_ok

    def state(self) -> dict[str, Any]:
        """For readiness and `forge status`."""
        return {
            "healthy": self.healthy(),
            "pending": self.pending,
            "shipped": self.shipped,
            "failures": self.failures,
            "failing_for_s": round(self.failing_for_s(), 1),
            "last_error": self._last_error,
            "recovered_from_dead_replicas": self.recovered,
            "spool_write_errors": self.spool.write_errors if self.spool else 0,
        }

    async def _run(self) -> None:
        backoff = self._interval
        next_recovery = 0.0
        while True:
            await asyncio.sleep(backoff)
            if self.spool is not None and time.monotonic() >= next_recovery:
                next_recovery = time.monotonic() + self._recover_interval
                self.recover()
            if not self._buffer:
                continue
            shipped = await self._ship_once()
            backoff = self._interval if shipped else min(max(backoff * 2, 0.1), 2.0)

    def recover(self) -> int:
        """Take over the records of dead replicas' spools on this node."""
        if self.spool is None:
            return 0
        taken = 0
        try:
            for orphans in self.spool.take_orphans():
                for record in orphans.records:
                    self.add(record)  # into this replica's own spool first
                self.spool.release_orphans(orphans)
                taken += len(orphans.records)
                log.warning(
                    "took over %d usage records from the spool of dead replica %s",
                    len(orphans.records),
                    orphans.owner,
                )
        except OSError as exc:
            log.error("usage spool recovery failed: %s", exc)
        self.recovered += taken
        return taken

    async def _ship_once(self) -> bool:
        async with self._shipping:
            batch = self._buffer[: self._max_batch]
            if not batch:
                return True
            try:
                await self._sink(batch)
            except Exception as exc:  # the recorder is restarting, or the DB is down
                self.failures += 1
                self._last_error = f"{type(exc).__name__}: {exc}"[:500]
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                log.warning(
                    "usage shipment of %d records failed (failing for %.1f s), will retry: %s",
                    len(batch),
                    self.failing_for_s(),
                    self._last_error,
                )
                return False
            del self._buffer[: len(batch)]  # new records are only ever appended behind it
            self.shipped += len(batch)
            self._failing_since = None
            if self.spool is not None:
                self.spool.acknowledged(len(batch))
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
        if self.spool is not None:
            self.spool.close()  # what was not shipped stays on disk for a successor
