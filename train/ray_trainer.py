"""A fine-tune as a Ray Train ``TorchTrainer``: the worker function steps ``SftRun``
(train/loop.py), reports its metrics every step and a checkpoint every
``checkpoint_every`` steps, and starts from the latest checkpoint when Ray Train restarts
it after a failure (``FailureConfig``): a killed worker costs the steps since the last
checkpoint, not the run, and the resumed run ends where an uninterrupted one would.

One worker for now: ``SftRun`` does not shard its rows across workers yet.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from train.loop import LoraSettings, SftRun, TrainSettings

ADAPTER_DIR = "adapter"
METRICS_FILE = "metrics.jsonl"


@dataclass
class FineTuneSpec:
    """Everything a run needs, as plain data (it travels to the workers)."""

    base_model: str
    train_path: str
    output_dir: str  # the adapter, and the metrics as JSON lines, end up here
    validation_path: str | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    settings: TrainSettings = field(default_factory=TrainSettings)
    checkpoint_every: int = 10  # steps between checkpoints
    device: str | None = None  # None: cuda when there is one


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function (runs in the training worker's process)."""
    import ray.train

    spec = _spec(config)
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_log = (out / METRICS_FILE).open("a")

    def record(metrics: dict[str, Any]) -> None:  # readable while the run goes on
        metrics_log.write(json.dumps(metrics) + "\n")
        metrics_log.flush()

    run = SftRun(
        spec.base_model,
        spec.train_path,
        spec.validation_path,
        spec.lora,
        spec.settings,
        on_metrics=record,
        device=spec.device,
    )
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            run.load_checkpoint(directory)
        record({"event": "resumed", "step": run.step_count})
    while not run.finished:
        metrics = run.step()
        if run.finished or run.step_count % spec.checkpoint_every == 0:
            with tempfile.TemporaryDirectory() as directory:
                run.save_checkpoint(directory)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report(metrics)
    run.save_adapter(out / ADAPTER_DIR)
    metrics_log.close()


def fit(
    spec: FineTuneSpec,
    storage_path: str,
    name: str,
    *,
    max_failures: int = 3,
    use_gpu: bool = False,
) -> Any:
    """Run ``spec`` on the connected Ray cluster; returns Ray Train's ``Result``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"spec": asdict(spec)},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=use_gpu),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()


def _spec(config: dict[str, Any]) -> FineTuneSpec:
    raw = dict(config["spec"])
    lora = dict(raw.pop("lora"))
    lora["target_modules"] = tuple(lora["target_modules"])
    settings = TrainSettings(**raw.pop("settings"))
    return FineTuneSpec(**raw, lora=LoraSettings(**lora), settings=settings)
