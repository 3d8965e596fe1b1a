"""One attempt of a fine-tuning job, whoever runs it (a Ray Train worker, or a thread of
the in-process launcher): the training loop, stepped; every step's metrics reported to the
job manager, whose answer may ask the run to stop; a checkpoint every N steps (and when
pausing) kept in the job's folder; the adapter saved at the end."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from forge.finetune.runs import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    EVALUATION_FILE,
    METRICS_FILE,
    Directive,
    RunOrder,
)
from train.collective import Collective
from train.loop import SftRun

# a step's metrics and its checkpoint's folder (None: this worker keeps none; Ray Train
# wants every worker's report when the lead worker reports a checkpoint)
Persist = Callable[[dict[str, Any], str | None], None]


class Reporter(Protocol):
    def report(self, event: dict[str, Any]) -> Directive:
        """Send ``event`` to the job manager; returns what it wants of the run so far."""
        ...

    def flush(self) -> None:
        """Wait until every report sent has arrived."""
        ...


class CallbackReporter:
    """Reports through a function (the in-process launcher's)."""

    def __init__(self, send: Callable[[dict[str, Any]], Directive]) -> None:
        self._send = send
        self.forced: Directive = None  # set by the launcher to stop a run by force

    def report(self, event: dict[str, Any]) -> Directive:
        return self.forced or self._send(event)

    def flush(self) -> None:
        return None


def local_path(url: str, scratch: Path) -> str:
    """A path this process can open for ``url`` (copied here when it is remote)."""
    if url.startswith("file://"):
        return url.removeprefix("file://")
    if "://" not in url:
        return url
    import fsspec

    target = scratch / Path(url).name
    with fsspec.open(url, "rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return str(target)


def base_model_path(model_path: str) -> str:
    """What ``from_pretrained`` loads: the config's ``model_path`` as the model server
    resolves it (``tiny``: the tiny local model under the data dir)."""
    from serve.models.server import resolve_model_path

    return resolve_model_path(model_path)


def execute(
    order: RunOrder,
    reporter: Reporter,
    *,
    restored: str | None = None,
    persist: Persist | None = None,
    collective: Collective | None = None,
) -> dict[str, Any]:
    """Run ``order`` from ``restored`` (a checkpoint folder) or its ``resume_from``.
    Returns the outcome: ``finished`` with the adapter's folder and a summary, or
    ``stopped`` when the manager asked; an error in a step is reported and raised.
    With several workers (``collective``) each runs this; the lead one alone reports,
    checkpoints and saves, and its directives stop them all at the same step."""
    workers = collective or Collective()
    out = Path(order.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_name = METRICS_FILE if workers.lead else f"{METRICS_FILE}.{workers.rank}"
    with (out / log_name).open("a") as log, tempfile.TemporaryDirectory() as scratch:

        def send(event: dict[str, Any]) -> Directive:
            log.write(json.dumps({"attempt": order.attempt, "at": time.time(), **event}) + "\n")
            log.flush()
            return reporter.report(event) if workers.lead else None

        run = SftRun(
            base_model_path(order.base_model),
            local_path(order.train_path, Path(scratch)),
            local_path(order.validation_path, Path(scratch)) if order.validation_path else None,
            order.lora,
            order.settings,
            device=order.device,
            collective=workers,
        )
        start_from = restored or order.resume_from
        if start_from is not None:
            run.load_checkpoint(start_from)
            send({"type": "message", "message": f"Resumed from step {run.step_count}"})
        if not workers.alone:
            send({"type": "message", "message": f"Training on {workers.world} workers"})
        every = order.checkpoint_every or run.steps_per_epoch
        while not run.finished:
            try:
                metrics = run.step()
            except Exception as exc:
                step = run.step_count + 1
                send({"type": "message", "level": "error", "message": f"Step {step}: {exc}"})
                reporter.flush()
                raise
            directive = send({"type": "metrics", **metrics, "total_steps": run.total_steps})
            directive = workers.agree(directive)
            checkpoint = None
            due = run.finished or run.step_count % every == 0 or directive == "pause"
            if due and workers.lead:
                checkpoint = str(
                    run.save_checkpoint(out / CHECKPOINTS_DIR / f"step-{run.step_count:06d}")
                )
                send(
                    {
                        "type": "checkpoint",
                        "step": run.step_count,
                        "location": checkpoint,
                        "metrics": metrics,
                    }
                )
            if persist is not None and due:
                # Only with a checkpoint: Ray Train takes one report at a time from a
                # worker (a queue of one, emptied when its controller polls), so a
                # report every step made every step wait for that poll (0.58 of the
                # plain loop's speed in bench.train_bench). The manager has every step.
                persist(metrics, checkpoint)
            if directive in ("cancel", "pause"):
                reporter.flush()
                return {"result": "stopped", "step": run.step_count}
        if not workers.lead:
            return {"result": "finished", "summary": run.summary()}
        adapter = run.save_adapter(out / ADAPTER_DIR)
        outcome: dict[str, Any] = {
            "result": "finished",
            "adapter": str(adapter),
            "summary": run.summary(),
        }
        if order.validation_path:
            send({"type": "message", "message": "Comparing base and tuned answers"})
            valid = local_path(order.validation_path, Path(scratch))
            evaluation = out / EVALUATION_FILE
            rows = run.compare(valid)
            evaluation.write_text("".join(json.dumps(r) + "\n" for r in rows))
            outcome["evaluation"] = str(evaluation)
        reporter.flush()
        return outcome
