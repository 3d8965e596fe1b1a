"""A LoRA fine-tune as a Ray Train TorchTrainer on the session's Ray: its training worker
SIGKILLed mid-run, Ray Train restarts it (FailureConfig), the worker resumes from its
last checkpoint, and the run ends where an uninterrupted one ends."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from serve.models.tiny import TinyModelSpec, build_tiny_model
from tests.unit.test_train_loop import chat, write_jsonl
from train.loop import LoraSettings, SftRun, TrainSettings
from train.ray_trainer import ADAPTER_DIR, METRICS_FILE, FineTuneSpec, fit

SETTINGS = TrainSettings(epochs=2, learning_rate=1e-2, batch_size=1, max_len=96, seed=7)
LORA = LoraSettings(dropout=0.05)
WORKER = "RayTrainWorker"


def metrics(out: Path) -> list[dict]:
    path = out / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def kill_the_worker_after(out: Path, step: int, killed: list[int]) -> None:
    """SIGKILL the training worker's process once it has reported ``step``."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if any(m.get("step", 0) >= step and "event" not in m for m in metrics(out)):
            for proc in psutil.process_iter(["cmdline"]):
                if WORKER in " ".join(proc.info["cmdline"] or ()):
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(proc.pid)
            return
        time.sleep(0.05)


@pytest.mark.timeout(600)
def test_a_killed_training_worker_resumes_from_its_checkpoint(ray_cluster, tmp_path):
    base = build_tiny_model(tmp_path / "tiny", TinyModelSpec(corpus_files=40))
    rows = [chat() for _ in range(31)] + [chat(weighted_refusal=True)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "out"
    spec = FineTuneSpec(
        base_model=str(base),
        train_path=str(train),
        output_dir=str(out),
        lora=LORA,
        settings=SETTINGS,
        checkpoint_every=5,
        device="cpu",
    )
    killed: list[int] = []
    killer = threading.Thread(target=kill_the_worker_after, args=(out, 12, killed))
    killer.start()
    result = fit(spec, str(tmp_path / "ray-train"), "ft-resume", max_failures=2)
    killer.join()

    assert killed, "the worker was never killed"
    assert result.error is None
    seen = metrics(out)
    resumed = [m for m in seen if m.get("event") == "resumed"]
    assert [m["step"] for m in resumed] == [10]  # the last checkpoint before step 12
    steps = [m["step"] for m in seen if "event" not in m]
    assert steps[-1] == 34 and steps.count(11) == 2  # steps 11.. ran again, from step 10
    assert (out / ADAPTER_DIR / "adapter_config.json").exists()

    alone = SftRun(base, train, lora=LORA, settings=SETTINGS, device="cpu").run()
    final = next(m for m in reversed(seen) if "event" not in m)
    assert final["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-4)
    assert final["trained_tokens"] == alone["trained_tokens"]
