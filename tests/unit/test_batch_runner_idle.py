"""An idle batch runner (every gateway replica has one) sleeps: its flusher runs only
while results wait to be written. It used to wake every 50 ms for nothing, part of an
idle platform's CPU floor."""

from __future__ import annotations

import asyncio
from typing import Any

from forge.batches.runner import BatchRunner
from forge.batches.store import BatchStore
from forge.config import FilesConfig
from forge.db.engine import make_sessionmaker
from forge.files.store import FileStore


async def test_an_idle_runner_never_flushes(sqlite_engine, tmp_path):
    sessions = make_sessionmaker(sqlite_engine)
    store = BatchStore(sessions, FileStore.on(sessions, FilesConfig(), tmp_path))

    async def dispatch(*_: Any) -> Any:
        raise AssertionError("nothing to run")

    runner = BatchRunner(store, dispatch, "idle-runner", poll_s=0.05, flush_s=0.01)
    flushes = 0
    flush = runner._flush

    async def counted() -> None:
        nonlocal flushes
        flushes += 1
        await flush()

    runner._flush = counted  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.5)  # 50 flush periods, ~10 polls of an empty queue
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert flushes == 1  # the one on stopping (nothing to write), none while idle
