"""A batch runner: claims lines, runs them (``dispatch``: the gateway sends each through
the same routing, limits and budgets as a live request, behind live traffic), and
records their results in batches of results (one transaction per flush, not per line).

A line's request that the project's limits refuse goes back unrun and its batch rests a
moment; one that its budget refuses pauses the batch until the budget's period turns
(it is not lost: the line runs then). A runner that stops hands its lines back; one that
dies leaves claims that run out, and another runner takes them. Every database call is
shielded from cancellation: a transaction cancelled half way (aiosqlite) left its
connection holding SQLite's write lock, and every writer after it timed out (seen when
a replica closed mid-batch)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from forge.batches.store import BatchStore, Claimed, LineResult
from forge.db.schema import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Later:
    """Not run: try again at ``until`` (``pause``: hold the whole batch till then)."""

    until: datetime
    reason: str
    pause: bool = False


Outcome = LineResult | Later
Dispatch = Callable[[Claimed, bytes], Awaitable[Outcome]]


@dataclass
class RunnerStats:
    ran: int = 0
    deferred: int = 0
    flushes: int = 0
    errors: list[str] = field(default_factory=list)


class BatchRunner:
    def __init__(
        self,
        store: BatchStore,
        dispatch: Dispatch,
        runner_id: str,
        *,
        concurrency: int = 64,
        poll_s: float = 1.0,
        flush_s: float = 0.05,
    ) -> None:
        self.store = store
        self.dispatch = dispatch
        self.runner_id = runner_id
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.flush_s = flush_s
        self.stats = RunnerStats()
        self._results: list[LineResult] = []
        self._in_flight: dict[tuple[str, int], Claimed] = {}
        self._wake = asyncio.Event()
        self._unwritten = asyncio.Event()  # results wait for the flusher: it runs only then

    def wake(self) -> None:
        """A batch was created here: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        flusher = asyncio.create_task(self._flush_forever())
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                room = self.concurrency - len(self._in_flight)
                worth = room >= max(1, self.concurrency // 4) or not self._in_flight
                claimed = await self._claim(room) if worth else []
                for line in claimed:
                    self._in_flight[(line.batch_id, line.line)] = line
                for group in _contiguous(claimed):
                    task = asyncio.create_task(self._run_group(group))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if not worth:
                    await self._rest(self.flush_s)  # woken when lines finish
                elif not claimed:
                    await self._settle()
                    await self._rest(self.poll_s)
        finally:
            flusher.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, flusher, return_exceptions=True)
            await self._give_back()

    async def _claim(self, room: int) -> list[Claimed]:
        try:
            return await asyncio.shield(self.store.claim(self.runner_id, room))
        except Exception as exc:  # the database away: the next poll tries again
            log.warning("batches: claiming failed: %s", exc)
            return []

    async def _settle(self) -> None:
        try:
            await asyncio.shield(self.store.settle())
        except Exception:
            log.exception("batches: settling failed")

    async def _rest(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _run_group(self, group: list[Claimed]) -> None:
        """Lines next to each other in one file: read in one go, run at once."""
        first, last = group[0], group[-1]
        try:
            data = await self.store.files.storage.read_range(
                first.location, first.offset, last.offset + last.length
            )
        except Exception as exc:
            log.warning("batches: reading %s failed: %s", first.batch_id, exc)
            await self._hand_back(group)
            return
        await asyncio.gather(
            *(self._run_one(c, data[c.offset - first.offset :][: c.length]) for c in group)
        )

    async def _run_one(self, claimed: Claimed, raw: bytes) -> None:
        try:
            outcome = await self.dispatch(claimed, raw)
        except Exception as exc:  # a bug of ours: the line goes back, the batch goes on
            log.exception("batches: %s line %d", claimed.batch_id, claimed.line)
            self.stats.errors.append(repr(exc))
            await self._hand_back([claimed])
            return
        if isinstance(outcome, Later):
            self.stats.deferred += 1
            if outcome.pause:
                await asyncio.shield(
                    self.store.pause(claimed.batch_id, outcome.until, outcome.reason)
                )
            await self._hand_back([claimed])
            return
        self.stats.ran += 1
        self._results.append(outcome)  # written at the next flush, with the others
        self._unwritten.set()
        self._in_flight.pop((claimed.batch_id, claimed.line), None)  # its slot is free now
        if len(self._results) >= 200:
            await self._flush()
        elif len(self._in_flight) <= self.concurrency * 3 // 4:
            self._wake.set()  # room for a claim worth its transaction

    async def _hand_back(self, lines: list[Claimed]) -> None:
        for c in lines:
            self._in_flight.pop((c.batch_id, c.line), None)
        try:
            await asyncio.shield(self.store.release(lines))
        except Exception:  # their claims run out instead
            log.exception("batches: handing lines back failed")

    async def _flush(self) -> None:
        results, self._results = self._results, []
        if not results:
            return
        try:
            await asyncio.shield(self.store.finish(results))
        except Exception:
            log.exception("batches: writing %d results failed; retrying", len(results))
            self._results = results + self._results
            self._unwritten.set()
            return
        self.stats.flushes += 1
        if not self._in_flight:
            self._wake.set()  # perhaps the batch's last lines: settle it now

    async def _flush_forever(self) -> None:
        """Every ``flush_s`` while results wait; asleep otherwise (an idle replica's
        runner used to wake 20 times a second for nothing)."""
        while True:
            await self._unwritten.wait()
            await asyncio.sleep(self.flush_s)
            self._unwritten.clear()  # results added from here on set it again
            await self._flush()

    async def _give_back(self) -> None:
        """Stopping: what ran is written, what did not goes back for another runner (a
        result that could not be written either: its line's claim runs out, and it runs
        again elsewhere)."""
        await self._flush()
        left = list(self._in_flight.values())
        if left:
            await self._hand_back(left)


def _contiguous(claimed: list[Claimed]) -> list[list[Claimed]]:
    """Runs of consecutive lines of one batch (claims come ordered by batch and line)."""
    groups: list[list[Claimed]] = []
    for c in claimed:
        if groups and groups[-1][-1].batch_id == c.batch_id and groups[-1][-1].line + 1 == c.line:
            groups[-1].append(c)
        else:
            groups.append([c])
    return groups


def later(seconds: float, reason: str, pause: bool = False) -> Later:
    return Later(utcnow() + timedelta(seconds=seconds), reason, pause)
