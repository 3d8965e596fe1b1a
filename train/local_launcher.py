"""Runs fine-tuning jobs in this process, a thread each, without Ray: for the embedded
gateway and the tests that drive the API. The runs are the same (train/job_run.py), on
one worker whatever ``resources.workers`` asks (the same steps and result: data
parallelism changes who computes a step, not what it computes)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from forge.finetune.objects import Resources
from forge.finetune.runs import Directive, RunOrder, RunReports
from train.job_run import CallbackReporter, execute
from train.ray_trainer import failed

log = logging.getLogger(__name__)


class LocalLauncher:
    def __init__(self, max_runs: int = 1) -> None:
        self.max_runs = max_runs
        self._runs: dict[str, CallbackReporter] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def fits(self, resources: Resources) -> bool:
        return resources.gpus_per_worker == 0 and len(self._runs) < self.max_runs

    async def start(self, order: RunOrder, reports: RunReports) -> None:
        loop = asyncio.get_running_loop()

        def send(event: dict[str, Any]) -> Directive:
            call = reports.progress(order.job_id, order.attempt, event)
            return asyncio.run_coroutine_threadsafe(call, loop).result()

        reporter = CallbackReporter(send)
        self._runs[order.job_id] = reporter
        task = asyncio.create_task(self._run(order, reporter, reports))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, order: RunOrder, reporter: CallbackReporter, reports: RunReports) -> None:
        try:
            outcome = await asyncio.to_thread(execute, order, reporter)
        except Exception as exc:
            log.warning("fine-tuning run %s failed: %s", order.job_id, exc)
            outcome = failed(exc)
        finally:
            self._runs.pop(order.job_id, None)
        await reports.ended(order.job_id, order.attempt, outcome)

    async def stop(self, job_id: str) -> None:
        """A thread cannot be killed: the run stops at its next report."""
        reporter = self._runs.get(job_id)
        if reporter is not None:
            reporter.forced = "cancel"

    async def release(self, handle: str) -> None:
        """A thread holds nothing once it has ended."""

    async def close(self) -> None:
        for reporter in self._runs.values():
            reporter.forced = "cancel"
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
