"""A fine-tuning job's run as a Ray Train ``TorchTrainer``.

The job manager actor starts a ``TrainingRun`` actor per run, which calls ``fit``: the
worker function (``train_worker``) executes the run (train/job_run.py), reporting every
step's metrics to the manager and each checkpoint (every N steps) to Ray Train; after a
worker failure Ray Train restarts it (``FailureConfig``) and it starts from the latest
checkpoint it reported. The manager's answer to a report may ask the run to stop: the
worker returns, and Ray Train shuts its workers down and releases their placement group
(killing the run from outside would leave that group behind: measured, see
docs/architecture.md).

Several workers (``resources.workers``) train data-parallel: each takes its share of
every step's rows and the gradients are summed (train/collective.py); the lead worker
reports, checkpoints and saves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray

from forge.finetune.objects import Resources
from forge.finetune.runs import Directive, RunOrder, RunReports
from forge.finetune.settings import LoraSettings, TrainSettings

log = logging.getLogger(__name__)
OUTCOME_FILE = "outcome-{attempt}.json"
RUN_DEATH_WAIT_S = 15.0  # a run's actor, killed or orphaned, is gone well within this
CONTROLLER_GRACE_S = 2.0  # and its Ray Train controller, which it owns, this much later


class ActorReporter:
    """Reports to the job manager actor without waiting: each report's answer is read
    when the next report goes (``ray.wait`` with no timeout), so a step never waits on a
    round trip and a stop is seen one step late at most."""

    def __init__(self, manager: Any, job_id: str, attempt: int) -> None:
        self._manager = manager
        self._job_id = job_id
        self._attempt = attempt
        self._pending: Any = None
        self._directive: Directive = None

    def report(self, event: dict[str, Any]) -> Directive:
        if self._pending is not None:
            ready, _ = ray.wait([self._pending], timeout=0)
            if ready:
                self._directive = ray.get(ready[0]) or self._directive
        self._pending = self._manager.progress.remote(self._job_id, self._attempt, event)
        return self._directive

    def flush(self) -> None:
        if self._pending is not None:
            self._directive = ray.get(self._pending) or self._directive
            self._pending = None


class SilentReporter:
    """For a run nobody manages (the benchmark): reports go to its metrics file only."""

    def report(self, event: dict[str, Any]) -> Directive:
        return None

    def flush(self) -> None:
        return None


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function (runs in the training worker's process)."""
    import ray.train

    from train.collective import Collective  # torch: the training worker's
    from train.job_run import execute

    order = order_from(config["order"])
    _use_the_cpus(order.resources.cpus_per_worker)
    workers = Collective.current()  # Ray Train has set up the process group
    reporter = (config.get("reporter") if workers.lead else None) or SilentReporter()

    def persist(metrics: dict[str, Any], checkpoint: str | None) -> None:
        kept = None if checkpoint is None else ray.train.Checkpoint.from_directory(checkpoint)
        ray.train.report(metrics, checkpoint=kept)

    group = ray.util.get_current_placement_group()
    if group is not None and workers.lead:  # released by the manager should the run die
        handle = f"{group.id.hex()}@{run_actor_name(order.job_id, order.attempt)}"
        reporter.report({"type": "started", "handle": handle})
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        outcome = execute(order, reporter, persist=persist, collective=workers)
    else:
        with checkpoint.as_directory() as directory:
            outcome = execute(
                order, reporter, restored=directory, persist=persist, collective=workers
            )
    if workers.lead:
        path = Path(order.output_dir) / OUTCOME_FILE.format(attempt=order.attempt)
        path.write_text(json.dumps(outcome))


def _use_the_cpus(cpus: float) -> None:
    """As many torch threads as CPUs the worker was given: Ray starts a worker with
    OMP_NUM_THREADS=1 (measured: the CPU bench ran at 0.58 of the plain loop on 2 CPUs,
    one of them idle)."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def fit(order: RunOrder, storage_path: str, reporter: Any = None) -> dict[str, Any]:
    """Run ``order`` on the connected Ray cluster; returns the run's outcome."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = order.resources
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker:
        per_worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"order": asdict(order), "reporter": reporter},
        scaling_config=ScalingConfig(
            num_workers=resources.workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker=per_worker,
        ),
        run_config=RunConfig(
            name=f"{order.job_id}-{order.attempt}",
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=order.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        return failed(result.error)
    path = Path(order.output_dir) / OUTCOME_FILE.format(attempt=order.attempt)
    return dict(json.loads(path.read_text()))


def failed(error: BaseException) -> dict[str, Any]:
    """The outcome of a failed run: the innermost error's message."""
    cause: BaseException = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = str(cause).strip().splitlines()
    return {
        "result": "failed",
        "code": "training_failed",
        "message": text[-1] if text else repr(cause),
    }


def order_from(raw: dict[str, Any]) -> RunOrder:
    """A ``RunOrder`` again from its ``asdict`` form."""
    raw = dict(raw)
    lora = dict(raw.pop("lora"))
    lora["target_modules"] = tuple(lora["target_modules"])
    settings = TrainSettings(**raw.pop("settings"))
    resources = raw.pop("resources")
    if not isinstance(resources, Resources):
        resources = Resources(**resources)
    return RunOrder(**raw, lora=LoraSettings(**lora), settings=settings, resources=resources)


@ray.remote(num_cpus=0)
class TrainingRun:
    """Calls ``fit`` for one run (its controller and workers are this actor's)."""

    def run(self, order: dict[str, Any], storage_path: str, reporter: Any) -> dict[str, Any]:
        try:
            return fit(order_from(order), storage_path, reporter)
        except Exception as exc:  # Ray Train could not even start the run
            return failed(exc)


class RayTrainLauncher:
    """Starts runs as ``TrainingRun`` actors, from inside the job manager actor."""

    def __init__(self, storage_path: str) -> None:
        self.storage_path = storage_path
        self._runs: dict[str, Any] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    def fits(self, resources: Resources) -> bool:
        free = ray.available_resources()  # type: ignore[no-untyped-call]
        cpus = resources.cpus_per_worker * resources.workers
        gpus = resources.gpus_per_worker * resources.workers
        return bool(free.get("CPU", 0.0) >= cpus and free.get("GPU", 0.0) >= gpus)

    async def start(self, order: RunOrder, reports: RunReports) -> None:
        manager = ray.get_runtime_context().current_actor
        name = run_actor_name(order.job_id, order.attempt)
        run = TrainingRun.options(name=name).remote()  # type: ignore[attr-defined]
        reporter = ActorReporter(manager, order.job_id, order.attempt)
        ref = run.run.remote(asdict(order), self.storage_path, reporter)
        self._runs[order.job_id] = run
        watcher = asyncio.create_task(self._watch(order, run, ref, reports))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, order: RunOrder, run: Any, ref: Any, reports: RunReports) -> None:
        try:
            outcome = await ref
        except Exception as exc:  # the TrainingRun actor died (stopped, or its node)
            outcome = {"result": "failed", "code": "run_lost", "message": str(exc)[:500]}
        ray.kill(run)  # its fit has returned: nothing of the run is left to keep
        if self._runs.get(order.job_id) is run:
            del self._runs[order.job_id]
        await reports.ended(order.job_id, order.attempt, outcome)

    async def stop(self, job_id: str) -> None:
        run = self._runs.pop(job_id, None)
        if run is not None:
            ray.kill(run)

    async def release(self, handle: str) -> None:
        """Remove a run's placement group once the run is gone. Ray Train removes it when
        a run ends, and its own cleaner asks the dashboard's state API, which the
        platform's lean head does not run (serve/local_ray.py): a run killed or orphaned
        would hold it for ever. First the run's actor must be dead (and a moment more, for
        its controller to follow it): removing the group under a live controller makes it
        restart its workers in a new group, which nobody would release."""
        from ray._raylet import PlacementGroupID
        from ray.util.placement_group import PlacementGroup, placement_group_table

        group_hex, _, run_name = handle.partition("@")
        group = PlacementGroup(PlacementGroupID(bytes.fromhex(group_hex)))
        if placement_group_table(group).get("state") in (None, "REMOVED"):
            return  # the run ended well: Ray Train removed it
        deadline = time.monotonic() + RUN_DEATH_WAIT_S
        while run_name and time.monotonic() < deadline:
            try:
                ray.get_actor(run_name)
            except ValueError:
                break
            await asyncio.sleep(0.2)
        else:
            if run_name:
                log.warning("fine-tuning: %s still alive; releasing its group anyway", run_name)
        await asyncio.sleep(CONTROLLER_GRACE_S if run_name else 0)
        if placement_group_table(group).get("state") not in (None, "REMOVED"):
            ray.util.remove_placement_group(group)


def run_actor_name(job_id: str, attempt: int) -> str:
    return f"forge-ft-run-{job_id}-{attempt}"
