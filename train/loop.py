"""The supervised fine-tuning loop (LoRA), Ray-free: the Ray Train worker drives it, and it
runs on its own for the benchmark and the tests.

One device per worker: ``cuda`` when there is one, else the CPU. Several workers (a
data-parallel run, train/collective.py) each take their share of every step's rows and
sum their gradients: the same steps, to float rounding, as one worker. Everything that decides
the result (LoRA initialisation, the data order of each epoch, dropout) follows from
``TrainSettings.seed`` and the step counter, and a checkpoint holds the rest (adapter
weights, optimizer, schedule, RNG), so a resumed run ends where an uninterrupted one does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from forge.finetune.settings import LoraSettings, TrainSettings
from train.collective import Collective
from train.data import IGNORE, Packed, pack, tokenize_file

MetricsCallback = Callable[[dict[str, Any]], None]
ADAPTER_DIR = "adapter"
STATE_FILE = "state.pt"


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def warmup_then_linear(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor: linear from 0 to 1 over the warm-up, then down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


class SftRun:
    """A LoRA fine-tune of ``base_model`` on a JSONL file, stepped, checkpointed, resumable."""

    def __init__(
        self,
        base_model: str | Path,
        train_path: str | Path,
        validation_path: str | Path | None = None,
        lora: LoraSettings | None = None,
        settings: TrainSettings | None = None,
        output_dir: str | Path | None = None,
        *,
        on_metrics: MetricsCallback | None = None,
        device: str | torch.device | None = None,
        collective: Collective | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.settings = settings or TrainSettings()
        self.lora = lora or LoraSettings()
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.on_metrics = on_metrics
        self.collective = collective or Collective()
        self.device = torch.device(device) if device is not None else pick_device()
        self.tokenizer: Any = AutoTokenizer.from_pretrained(base_model)
        max_len = self.settings.max_len
        self.train_rows = pack(tokenize_file(train_path, self.tokenizer, max_len), max_len)
        if not self.train_rows:
            raise ValueError(f"{train_path}: no example has a token to train on")
        self.valid_rows: list[Packed] = []
        if validation_path is not None:
            examples = tokenize_file(validation_path, self.tokenizer, max_len)
            self.valid_rows = pack(examples, max_len)
        torch.manual_seed(self.settings.seed)  # the LoRA matrices' initialisation
        self.model = _lora_model(base_model, self.lora, self.device)
        self.steps_per_epoch = math.ceil(len(self.train_rows) / self.settings.batch_size)
        self.total_steps = self.settings.epochs * self.steps_per_epoch
        self._trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self._trained,
            lr=self.settings.learning_rate,
            weight_decay=self.settings.weight_decay,
        )
        warmup = int(self.settings.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_then_linear(warmup, self.total_steps)
        )
        self.step_count = 0
        self.trained_tokens = 0
        self.train_loss: float | None = None
        self.valid_loss: float | None = None
        self._order: tuple[int, torch.Tensor] | None = None
        self._busy_s = 0.0
        self._busy_tokens = 0
        self._step_lr = 0.0

    # -- stepping -------------------------------------------------------------------------

    def run(self, until_step: int | None = None) -> dict[str, Any]:
        """Step to ``until_step`` (default: the end); at the end, save the adapter to
        ``output_dir`` when one was given. Returns a summary."""
        stop = self.total_steps if until_step is None else min(until_step, self.total_steps)
        while self.step_count < stop:
            self.step()
        if self.finished and self.output_dir is not None:
            self.save_adapter(self.output_dir)
        return self.summary()

    @property
    def finished(self) -> bool:
        return self.step_count >= self.total_steps

    def step(self) -> dict[str, Any]:
        """One optimizer step over the next batch of packed rows; reports its metrics."""
        if self.finished:
            raise RuntimeError(f"the run ended after its {self.total_steps} steps")
        rows = self._batch_rows(self.step_count)
        started = time.perf_counter()
        self.model.train()
        if self.collective.alone:
            batch = self._collate(rows)
            loss_sum, count = self._loss(batch)
            loss: Any = loss_sum / count  # Tensor.backward is untyped
            loss.backward()
            tokens = int(batch["tokens"])
        else:
            tokens = self._shared_step(rows)
        if self.settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self._trained, self.settings.grad_clip)
        self.optimizer.step()
        self._step_lr = float(self.scheduler.get_last_lr()[0])  # the rate this step used
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.collective.alone:
            self.train_loss = float(loss.detach())  # waits for the device: honest timing
        self._busy_s += time.perf_counter() - started
        self._busy_tokens += tokens
        self.trained_tokens += tokens
        self.step_count += 1
        return self._report()

    def _shared_step(self, rows: list[Packed]) -> int:
        """This worker's share of the step's rows, then one sum over the workers of the
        gradients of the summed loss, the loss, the labelled tokens and the tokens: the
        gradients divided by the step's labelled tokens are what one worker would get
        over all the rows. Returns the step's tokens (every worker's)."""
        mine = self.collective.share(rows)
        loss_sum, count, tokens = torch.zeros((), device=self.device), 0, 0
        if mine:
            batch = self._collate(mine)
            loss_sum, count = self._loss(batch)
            summed: Any = loss_sum  # Tensor.backward is untyped
            summed.backward()
            tokens = int(batch["tokens"])
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._trained]
        totals = torch.tensor(
            [float(loss_sum.detach()), count, tokens], device=self.device, dtype=torch.float32
        )
        flat = torch.cat([g.reshape(-1).float() for g in grads] + [totals])
        self.collective.sum_(flat)
        loss_total, count_total, tokens_total = flat[-3:].tolist()
        scale = 1.0 / max(1.0, count_total)
        offset = 0
        for p, g in zip(self._trained, grads, strict=True):
            n = g.numel()
            p.grad = (flat[offset : offset + n] * scale).view_as(p).to(p.dtype)
            offset += n
        self.train_loss = loss_total / max(1.0, count_total)
        return int(tokens_total)

    def _report(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "step": self.step_count,
            "epoch": (self.step_count - 1) // self.steps_per_epoch + 1,
            "train_loss": self.train_loss,
            "tokens_per_s": self._busy_tokens / self._busy_s if self._busy_s else 0.0,
            "trained_tokens": self.trained_tokens,
            "learning_rate": self._step_lr,
        }
        every = self.settings.eval_every_steps
        due = self.finished or (every > 0 and self.step_count % every == 0)
        due = due or (
            self.settings.eval_every_epoch and self.step_count % self.steps_per_epoch == 0
        )
        if self.valid_rows and due:
            metrics["valid_loss"] = self.valid_loss = self.evaluate()
        if self.on_metrics is not None:
            self.on_metrics(metrics)
        return metrics

    def evaluate(self) -> float:
        """Mean loss per labelled token over the validation rows."""
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            size = self.settings.batch_size
            for start in range(0, len(self.valid_rows), size):
                loss_sum, n = self._loss(self._collate(self.valid_rows[start : start + size]))
                total, count = total + float(loss_sum), count + n
        return total / max(1, count)

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.step_count,
            "total_steps": self.total_steps,
            "trained_tokens": self.trained_tokens,
            "train_loss": self.train_loss,
            "valid_loss": self.valid_loss,
            "tokens_per_s": self._busy_tokens / self._busy_s if self._busy_s else 0.0,
        }

    def compare(
        self, path: str | Path, limit: int = 20, max_new_tokens: int = 64
    ) -> list[dict[str, Any]]:
        """Base against tuned, side by side, on the first ``limit`` examples of ``path``:
        each prompt (a chat's messages before its last assistant turn, or a prompt), the
        answer it should get, and what the base model and the tuned one say (greedy)."""
        from train.data import read_jsonl

        rows: list[dict[str, Any]] = []
        self.model.eval()
        for example in read_jsonl(path):
            if len(rows) >= limit:
                break
            if "messages" in example:
                messages = example["messages"]
                last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
                prompt = [
                    {"role": m["role"], "content": m.get("content") or ""} for m in messages[:last]
                ]
                ids = self.tokenizer.apply_chat_template(
                    prompt, add_generation_prompt=True, return_tensors="pt"
                )
                ids = ids["input_ids"] if hasattr(ids, "keys") else ids
                expected = messages[last].get("content") or ""
            else:
                prompt = example["prompt"]
                ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
                expected = example["completion"]
            ids = ids.to(self.device)
            tuned = self._greedy(ids, max_new_tokens)
            with self.model.disable_adapter():
                base = self._greedy(ids, max_new_tokens)
            rows.append({"prompt": prompt, "expected": expected, "base": base, "tuned": tuned})
        return rows

    def _greedy(self, ids: torch.Tensor, max_new_tokens: int) -> str:
        with torch.no_grad(), _autocast(self.device):
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return str(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))

    # -- data -----------------------------------------------------------------------------

    def _batch_rows(self, step: int) -> list[Packed]:
        """The rows of ``step``: each epoch a fresh permutation seeded by (seed, epoch), so
        the order is a function of the step alone and a resumed run sees the same data."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.train_rows), generator=generator))
        size = self.settings.batch_size
        picked = self._order[1][index * size : (index + 1) * size].tolist()
        return [self.train_rows[i] for i in picked]

    def _collate(self, rows: list[Packed]) -> dict[str, Any]:
        """Right-pad to the longest row. Padding gets positions restarting at 0 too: its
        own block of the mask, and labels -100, so it touches nothing real."""
        width = max(len(row) for row in rows)
        pad_id = self.tokenizer.pad_token_id
        pad_id = self.tokenizer.eos_token_id if pad_id is None else pad_id
        ids, labels, positions = [], [], []
        for row in rows:
            gap = width - len(row)
            ids.append(row.input_ids + [pad_id] * gap)
            labels.append(row.labels + [IGNORE] * gap)
            positions.append(row.position_ids + list(range(gap)))

        def tensor(data: list[list[int]]) -> torch.Tensor:
            return torch.tensor(data, dtype=torch.long, device=self.device)

        return {
            "input_ids": tensor(ids),
            "labels": tensor(labels),
            "position_ids": tensor(positions),
            "tokens": sum(len(row) for row in rows),
        }

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        """(summed loss, labelled tokens): summed, not averaged per row, so that every
        labelled token weighs the same however the examples were packed.

        No ``attention_mask`` and ``use_cache=False``: that is what makes transformers
        derive the block-diagonal mask from the restarting ``position_ids``."""
        with _autocast(self.device):
            logits = self.model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            ).logits
        # the labels shifted left (padded with IGNORE), not the logits shifted right: no
        # copy of the whole logits tensor (8 x 1024 x vocab floats a step), as HF's loss
        targets = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE)
        loss_sum = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(),
            targets.flatten(),
            ignore_index=IGNORE,
            reduction="sum",
        )
        return loss_sum, int((targets != IGNORE).sum())

    # -- persistence ----------------------------------------------------------------------

    def save_adapter(self, out_dir: str | Path) -> Path:
        """A PEFT adapter folder: ``PeftModel.from_pretrained(base, out_dir)`` loads it."""
        out = Path(out_dir)
        self.model.save_pretrained(out)
        return out

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Adapter weights (PEFT's format) plus everything else resuming needs."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.save_adapter(out / ADAPTER_DIR)
        state = {
            "step": self.step_count,
            "total_steps": self.total_steps,
            "train_rows": len(self.train_rows),
            "trained_tokens": self.trained_tokens,
            "train_loss": self.train_loss,
            "valid_loss": self.valid_loss,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        torch.save(state, out / STATE_FILE)
        return out

    def load_checkpoint(self, directory: str | Path) -> None:
        """Continue from a checkpoint of a run with the same data and settings."""
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        src = Path(directory)
        state = torch.load(src / STATE_FILE, map_location="cpu", weights_only=True)
        if (state["total_steps"], state["train_rows"]) != (self.total_steps, len(self.train_rows)):
            raise ValueError(
                f"{src}: checkpoint of a run with {state['train_rows']} rows in "
                f"{state['total_steps']} steps; this one has {len(self.train_rows)} in "
                f"{self.total_steps}: not the same data or settings"
            )
        weights = load_peft_weights(str(src / ADAPTER_DIR), device=str(self.device))
        result: Any = set_peft_model_state_dict(self.model, weights)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{src}: adapter weights do not fit: {result.unexpected_keys[:3]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step_count = int(state["step"])
        self.trained_tokens = int(state["trained_tokens"])
        self.train_loss = state["train_loss"]
        self.valid_loss = state["valid_loss"]
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])


def _lora_model(base_model: str | Path, lora: LoraSettings, device: torch.device) -> Any:
    """The base model, frozen, with trainable LoRA matrices; bf16 base weights on a GPU
    that has bf16 (PEFT keeps the adapter itself in float32)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=_base_dtype(device))
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config).to(device)


def _base_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _autocast(device: torch.device) -> Any:
    """bf16 matmuls on a GPU that has them; plain float32 elsewhere."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
