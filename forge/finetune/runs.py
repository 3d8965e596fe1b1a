"""What passes between the job manager and a training run, as plain data: the order
that starts a run, the reports a run sends while it goes, and how it ended. A launcher
(Ray Train's, or the in-process one) turns an order into a run; the manager never sees
how."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from forge.finetune.objects import Resources
from forge.finetune.settings import LoraSettings, TrainSettings

Directive = Literal["cancel", "pause"] | None  # what the manager wants of a running run
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"  # the run's own log of its reports, kept with the job
EVALUATION_FILE = "evaluation.jsonl"  # base against tuned on the validation set


@dataclass
class RunOrder:
    """Everything one attempt of a job needs (it travels to the training workers)."""

    job_id: str
    attempt: int
    base_model: str  # a folder or hub id for from_pretrained
    train_path: str  # fsspec URLs or local paths of the JSONL files
    output_dir: str  # the job's folder: adapter, checkpoints, metrics.jsonl
    validation_path: str | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    settings: TrainSettings = field(default_factory=TrainSettings)
    checkpoint_every: int = 0  # steps between checkpoints; 0: every epoch's end
    keep_checkpoints: int = 3
    resume_from: str | None = None  # a checkpoint folder of an earlier attempt
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 3
    device: str | None = None  # None: cuda when there is one


class RunReports(Protocol):
    """The manager's side of a run (the job manager actor's methods, in Ray)."""

    async def progress(self, job_id: str, attempt: int, report: dict[str, Any]) -> Directive: ...

    async def ended(self, job_id: str, attempt: int, outcome: dict[str, Any]) -> None: ...


class Launcher(Protocol):
    """Starts and stops runs. ``start`` returns once the run is under way; the run then
    calls ``reports.progress`` as it goes and ``reports.ended`` exactly once."""

    def fits(self, resources: Resources) -> bool:
        """Whether the cluster has room for a run with ``resources`` now."""
        ...

    async def start(self, order: RunOrder, reports: RunReports) -> None: ...

    async def stop(self, job_id: str) -> None:
        """End the run at once (after it ignored a cancel for the grace period)."""
        ...

    async def release(self, handle: str) -> None:
        """Free what a run that died unseen may have left held (its ``started`` report's
        ``handle``); nothing when it is already free."""
        ...
