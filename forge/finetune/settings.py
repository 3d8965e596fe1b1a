"""A run's settings as plain data (no torch here): the job manager resolves them from a
request, stores them with the job, and hands them to the training loop (train/loop.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoraSettings:
    """Plain LoRA (what serving accepts: no DoRA, no biases, no extra saved modules)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class TrainSettings:
    """Concrete hyperparameters; the API's ``"auto"`` values are resolved before this."""

    epochs: int = 1
    learning_rate: float = 2e-4
    batch_size: int = 8  # packed rows per step
    max_len: int = 512  # tokens per packed row (and per example: longer ones are cut)
    seed: int = 0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    eval_every_steps: int = 0  # 0: evaluate only after the last step
    eval_every_epoch: bool = False  # also at each epoch's end (a job's validation loss)
    grad_clip: float = 1.0  # 0: no clipping
