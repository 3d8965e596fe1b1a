"""The fine-tuning loop (train/loop.py) against the plain PEFT loop, same model, same rows.

    python -m bench.train_bench --shape tiny --device cpu --ray    # here, ~2 min
    python -m bench.train_bench --shape tiny --device cpu --ray --workers 2   # + data parallel
    python -m bench.train_bench                                     # a GPU: Llama-3.2-1B shape

Both train LoRA (r=16 on q/k/v/o by default) on the same packed rows of ``--seq`` tokens,
``--batch`` rows a step, from a random-weight model saved and loaded through
``from_pretrained``. The baseline is the loop every PEFT tutorial writes (``model(**batch,
labels=…)``, ``backward``, ``step``); ours is ``SftRun.step`` (its own loss over labelled
tokens, schedule, clipping, metrics). Steady state: the first ``--warmup`` steps of each are
not timed. On a GPU each figure comes with its share of the bf16 peak at 6·N FLOPs per
token for the forward and backward of N base parameters (LoRA's own are negligible).
``--ray`` adds the platform's own path: the same rows as a fine-tuning job's run on a
local Ray, a Ray Train ``TorchTrainer`` worker executing train/job_run.py (a report to Ray
Train every step, the job's metrics file, a checkpoint at the end), its steady state
read from the run's per-step wall-clock times. Every figure counts the same tokens: the
rows' real ones, never their padding. The GPU machine has no Ray, so ``--ray`` is for
CPU runs here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

# bf16 dense peak (FLOP/s) by device name
PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}


def write_dataset(path: Path, rows: int, seq: int, seed: int = 0) -> Path:
    """Chat examples of varied length, enough to fill ``rows`` packed rows of ``seq``."""
    rng = random.Random(seed)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "code",
        "word",
        "answer",
        "model",
        "token",
        "ray",
        "serve",
        "train",
        "data",
    ]
    with path.open("w") as out:
        filled = 0
        while filled < rows * seq:
            question = " ".join(rng.choices(words, k=rng.randint(8, 60)))
            answer = " ".join(rng.choices(words, k=rng.randint(16, 200)))
            messages = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            out.write(json.dumps({"messages": messages}) + "\n")
            filled += (len(question) + len(answer)) // 6  # tokens, at least (short words)
    return path


def plain_peft_loop(
    model_dir: Path, batches: list[dict[str, Any]], args: argparse.Namespace
) -> float:
    """Tokens a second of the textbook loop over ``batches`` (after the warm-up)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(args.device)
    config = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens, t0 = 0, 0.0
    for index, batch in enumerate(batches):
        if index == args.warmup:
            _sync(args.device)
            tokens, t0 = 0, time.perf_counter()
        on_device = {k: v.to(args.device) for k, v in batch.items() if k != "tokens"}
        loss = model(**on_device, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch["tokens"]  # the rows' own tokens, not their padding
    _sync(args.device)
    return tokens / (time.perf_counter() - t0)


def ours(model_dir: Path, data: Path, args: argparse.Namespace) -> tuple[float, Any]:
    """Tokens a second of ``SftRun.step`` (after the warm-up), and the run (its rows)."""
    from train.loop import LoraSettings, SftRun, TrainSettings

    run = SftRun(
        model_dir,
        data,
        lora=LoraSettings(rank=args.rank, alpha=2 * args.rank),
        settings=TrainSettings(batch_size=args.batch, max_len=args.seq, learning_rate=1e-4),
        device=args.device,
    )
    steps = args.warmup + args.steps
    if run.total_steps < steps:
        raise SystemExit(f"the dataset makes {run.total_steps} steps, fewer than {steps}")
    tokens, t0 = 0, 0.0
    for index in range(steps):
        if index == args.warmup:
            _sync(args.device)
            tokens, t0 = run.trained_tokens, time.perf_counter()
        run.step()
    _sync(args.device)
    return (run.trained_tokens - tokens) / (time.perf_counter() - t0), run


def as_batches(run: Any, count: int, batch: int) -> list[dict[str, Any]]:
    """The run's own packed rows, as the plain loop takes them (labels already shifted by
    the model's loss; positions restart per packed example)."""
    import torch

    rows = run.train_rows[: count * batch]
    out = []
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        width = max(len(r.input_ids) for r in chunk)
        pad = run.tokenizer.pad_token_id

        def padded(values: list[list[int]], fill: int, width: int = width) -> torch.Tensor:
            return torch.tensor([v + [fill] * (width - len(v)) for v in values])

        out.append(
            {
                "input_ids": padded([r.input_ids for r in chunk], pad),
                "labels": padded([r.labels for r in chunk], -100),
                "position_ids": padded([r.position_ids for r in chunk], 0),
                "tokens": sum(len(r.input_ids) for r in chunk),
            }
        )
    return out


def through_ray_train(
    model_dir: Path, data: Path, args: argparse.Namespace, workers: int = 1
) -> float:
    """Tokens a second of the same rows run as a fine-tuning job's run on Ray Train
    (steps ``warmup`` to ``warmup + steps``, by the run's own per-step wall times), on
    ``workers`` data-parallel workers sharing the CPUs."""
    import ray

    from forge.finetune.objects import Resources
    from forge.finetune.runs import METRICS_FILE, RunOrder
    from forge.finetune.settings import LoraSettings, TrainSettings
    from train.ray_trainer import fit

    work = Path(tempfile.mkdtemp(prefix="train-bench-ray-"))
    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
    try:
        order = RunOrder(
            job_id="ftjob-bench",
            attempt=1,
            base_model=str(model_dir),
            train_path=str(data),
            output_dir=str(work / "job"),
            lora=LoraSettings(rank=args.rank, alpha=2 * args.rank),
            settings=TrainSettings(batch_size=args.batch, max_len=args.seq, learning_rate=1e-4),
            checkpoint_every=10**9,  # one, at the end
            resources=Resources(workers=workers, cpus_per_worker=args.threads / workers),
            device=args.device,
        )
        outcome = fit(order, str(work / "ray"))
        if outcome["result"] != "finished":
            raise SystemExit(f"the Ray Train run failed: {outcome}")
    finally:
        ray.shutdown()
    lines = (work / "job" / METRICS_FILE).read_text().splitlines()
    steps = [m for m in map(json.loads, lines) if m.get("type") == "metrics"]
    first, last = steps[args.warmup - 1], steps[args.warmup + args.steps - 1]
    return (last["trained_tokens"] - first["trained_tokens"]) / (last["at"] - first["at"])


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="llama-1b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="timed steps of each loop")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=os.environ.get("OUT", tempfile.gettempdir()))
    ap.add_argument("--ray", action="store_true", help="also through Ray Train (CPU here)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads")
    ap.add_argument(
        "--workers", type=int, default=0, help="also Ray Train with this many workers (CPU)"
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)  # the Ray Train worker gets as many CPUs

    from bench.gpu_engine_bench import SHAPES, build_model

    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    model_dir = build_model(args.shape, work / "model", args.device)
    steps = args.warmup + args.steps
    data = write_dataset(work / "train.jsonl", rows=int(steps * args.batch * 1.3), seq=args.seq)
    ours_tps, run = ours(model_dir, data, args)
    batches = as_batches(run, steps, args.batch)
    del run
    if args.device == "cuda":
        torch.cuda.empty_cache()
    plain_tps = plain_peft_loop(model_dir, batches, args)
    ray_tps = through_ray_train(model_dir, data, args) if args.ray else None
    parallel_tps = through_ray_train(model_dir, data, args, args.workers) if args.workers else None
    spec = SHAPES[args.shape]
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK.items() if k in name), None)
    n_params = _parameters(model_dir)
    lines = [
        f"train_bench: {args.shape} on {name}, LoRA r={args.rank} q/k/v/o, "
        f"{args.batch} x {args.seq} tokens a step, {args.steps} timed steps",
        "| loop | tokens/s | share of bf16 peak (6N FLOPs/token) |",
        "| --- | --- | --- |",
    ]
    figures = [("plain PEFT loop", plain_tps), ("train/loop.py SftRun", ours_tps)]
    if ray_tps is not None:
        figures.append(("a job's run on Ray Train", ray_tps))
    if parallel_tps is not None:
        figures.append((f"the same on {args.workers} data-parallel workers", parallel_tps))
    for label, tps in figures:
        share = f"{100 * 6 * n_params * tps / peak:.1f}%" if peak else "n/a"
        lines.append(f"| {label} | {tps:,.0f} | {share} |")
    lines.append(f"ratio ours / plain: {ours_tps / plain_tps:.2f} (goal >= 0.95 on a GPU)")
    if ray_tps is not None:
        lines.append(f"ratio Ray Train / plain: {ray_tps / plain_tps:.2f} (goal >= 0.9 on a CPU)")
    if parallel_tps is not None:
        lines.append(f"ratio {args.workers} workers / plain: {parallel_tps / plain_tps:.2f}")
    lines.append(f"vocab {spec['vocab_size']}, base parameters {n_params / 1e6:.0f} M")
    text = "\n".join(lines)
    print(text)
    Path(args.out, "train_bench.md").write_text(text + "\n")


def _parameters(model_dir: Path) -> int:
    """Base parameters from the saved config (embeddings counted once: tied)."""
    config = json.loads((model_dir / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv_heads, head_dim = (
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
    )
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    mlp = 3 * hidden * config["intermediate_size"]
    return int(layers * (attention + mlp) + config["vocab_size"] * hidden)


if __name__ == "__main__":
    main()
