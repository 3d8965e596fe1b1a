"""GPU engine benchmark (issue 4): a Llama-3.2-1B-shaped model with random bf16 weights.

    python -m bench.gpu_engine_bench [--shape llama-1b] [--out DIR]   # on the GPU machine
    .venv/bin/python -m bench.gpu_engine_bench --shape tiny --device cpu --new 16  # dry run

Runs without Ray (the lent GPU machine has torch, transformers and peft only; pydantic
comes from wheels carried along, see bench/README.md). Same run, same model:
- baseline: ``model.generate`` with static batches of 1 and 128 prompts;
- the transformers engine at concurrency 1, 8, 32, 128: our slot batch with CUDA graphs
  (the default for this model), the same eagerly, our padded batch, transformers'
  continuous batching (with and without its CUDA graphs), and the slot batch with the
  streams spread over 8 random LoRA adapters in one mixed batch; then whether the slot
  batch's greedy answers with graphs equal its eager ones;
and each figure as a share of the weight+KV bandwidth roofline of the GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-3.2-1B's config.json, weights random.
    "llama-1b": {
        "vocab_size": 128256,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "max_position_embeddings": 4096,
        "rope_theta": 500000.0,
        "tie_word_embeddings": True,
    },
    "tiny": {
        "vocab_size": 4096,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    },
}
# Memory bandwidth (bytes/s) by device name, for the roofline.
BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12, "L4": 3.0e11}


def build_model(shape: str, out: Path, device: str) -> Path:
    """Random weights, saved and loaded back through from_pretrained like a real model;
    a tokenizer padded with placeholder tokens to the model's vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from serve.models.tiny import TinyModelSpec, build_tokenizer

    spec = SHAPES[shape]
    tokenizer = build_tokenizer(TinyModelSpec(corpus_files=20))
    tokenizer.add_tokens([f"<x{i}>" for i in range(spec["vocab_size"] - len(tokenizer))])
    config = LlamaConfig(
        **spec,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_adapters(path: Path, count: int, rank: int = 16) -> dict[str, Path]:
    """``count`` random LoRA adapters on q/k/v/o, written as PEFT saves them (no need to
    load the 1B base model to make them)."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((path / "config.json").read_text())
    hidden, head_dim = config["hidden_size"], config["head_dim"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    shapes = {  # (in, out) features; serve.models.adapters has these too, but it needs
        # SQLAlchemy, which the GPU machine lacks
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
    }
    modules = tuple(shapes)
    adapters: dict[str, Path] = {}
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        tensors = {}
        for layer in range(config["num_hidden_layers"]):
            for module in modules:
                features_in, features_out = shapes[module]
                prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
                a = torch.randn(rank, features_in, generator=generator) / features_in**0.5
                b = torch.randn(features_out, rank, generator=generator) / rank
                tensors[f"{prefix}.lora_A.weight"] = a.to(torch.bfloat16)
                tensors[f"{prefix}.lora_B.weight"] = b.to(torch.bfloat16)
        out = path.parent / f"adapter{index}"
        out.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(out / "adapter_model.safetensors"))
        lora = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": str(path),
            "r": rank,
            "lora_alpha": 2 * rank,
            "lora_dropout": 0.0,
            "target_modules": list(modules),
            "bias": "none",
            "inference_mode": True,
        }
        (out / "adapter_config.json").write_text(json.dumps(lora))
        adapters[f"adapter{index}"] = out
    return adapters


def roofline_tps(params: int, cfg: dict[str, Any], batch: int, context: int, bw: float) -> float:
    """Tokens/s if every decode step only had to read the weights and each stream's KV."""
    kv_per_token = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"] * 2
    step_bytes = 2 * params + batch * context * kv_per_token
    return batch * bw / step_bytes


def hf_generate(path: Path, prompts: list[list[int]], new: int, batch: int, device: str) -> float:
    """Tokens/s of ``model.generate`` over static batches of ``batch`` prompts."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto").to(device).eval()
    kwargs = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False}
    with torch.inference_mode():
        model.generate(torch.tensor(prompts[:1], device=device), **{**kwargs, "max_new_tokens": 4})
        _sync(device)
        t0, produced = time.perf_counter(), 0
        for i in range(0, len(prompts), batch):
            ids = torch.tensor(prompts[i : i + batch], device=device)
            produced += (model.generate(ids, **kwargs).shape[1] - ids.shape[1]) * ids.shape[0]
        _sync(device)
    del model
    return produced / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


async def engine_tps(
    path: Path,
    prompts: list[list[int]],
    new: int,
    levels: list[int],
    device: str,
    adapters: dict[str, Path] | None = None,
    **batching: Any,
) -> dict[Any, dict[str, Any]]:
    """Tokens/s and TTFT per concurrency level; with ``adapters``, request i goes
    through adapter i mod their number."""
    from serve.models.engine import SamplingParams
    from serve.models.transformers_engine import TransformersEngine

    dtype = "bfloat16" if device == "cuda" else None
    engine = TransformersEngine(path, device=device, dtype=dtype, **batching)
    await engine.start()
    names = list(adapters or {})
    for name in names:
        await engine.load_adapter(name, (adapters or {})[name])
    turn = iter(range(10**9))
    results: dict[Any, dict[str, Any]] = {}
    try:
        params = SamplingParams(max_tokens=new, temperature=0)

        async def one(ids: list[int], ttfts: list[float]) -> int:
            t0, last = time.perf_counter(), None
            adapter = names[next(turn) % len(names)] if names else None
            async for out in engine.generate(ids, params, adapter):
                if last is None:
                    ttfts.append((time.perf_counter() - t0) * 1000)
                last = out
            return last.completion_tokens if last else 0

        warm = SamplingParams(max_tokens=min(new, 160), temperature=0)
        for c in levels:  # warm-up: past 256 columns at every row count (CUDA graphs)
            await asyncio.gather(
                *(
                    _drain(engine.generate(p, warm, names[i % len(names)] if names else None))
                    for i, p in enumerate(prompts[:c])
                )
            )
        for c in levels:
            ttfts: list[float] = []
            batch = prompts[: max(c, 4)]
            t0 = time.perf_counter()
            produced = 0
            for i in range(0, len(batch), c):
                produced += sum(await asyncio.gather(*(one(p, ttfts) for p in batch[i : i + c])))
            results[c] = {
                "tokens_per_s": produced / (time.perf_counter() - t0),
                "ttft_p50_ms": statistics.median(ttfts),
            }
        graphs = getattr(engine._batch, "graphs", None)
        if graphs is not None:  # the slot batch: how its CUDA graphs fared
            results["graphs"] = {"captured": graphs.captured, "disabled": graphs.disabled}
    finally:
        await engine.stop()
    return results


async def _drain(outputs: Any) -> None:
    async for _ in outputs:
        pass


async def graphs_agree(path: Path, prompts: list[list[int]], device: str) -> str:
    """Whether the slot batch answers the same greedy text with its CUDA graphs as
    without (a graph attends over a power-of-two bucket of columns, masked: in bf16 a
    long answer may drift by a rounding; the first 32 tokens should agree)."""
    from serve.models.engine import SamplingParams
    from serve.models.transformers_engine import TransformersEngine

    dtype = "bfloat16" if device == "cuda" else None
    texts = []
    for graphs in (True, False):
        engine = TransformersEngine(
            path, device=device, dtype=dtype, batching="slots", cuda_graphs=graphs
        )
        await engine.start()
        try:
            params = SamplingParams(max_tokens=32, temperature=0)

            async def answer(ids: list[int], engine: Any = engine, params: Any = params) -> str:
                return "".join([o.text async for o in engine.generate(ids, params)])

            texts.append(await asyncio.gather(*(answer(p) for p in prompts)))
        finally:
            await engine.stop()
    same = sum(a == b for a, b in zip(*texts, strict=True))
    return f"{same} of {len(prompts)} answers identical"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama-1b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    ap.add_argument("--new", type=int, default=256, help="new tokens per request")
    ap.add_argument("--levels", default="1,8,32,128")
    ap.add_argument("--out", default=os.environ.get("OUT", tempfile.gettempdir()))
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated words: run the engine variants whose label holds one "
        "(e.g. 'LoRA,continuous batching + CUDA'), without the generate baseline",
    )
    args = ap.parse_args()
    import random

    import torch

    levels = [int(x) for x in args.levels.split(",")]
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    bw = next((b for k, b in BANDWIDTH.items() if k in name), 0.0)
    path = build_model(args.shape, Path(tempfile.mkdtemp()) / args.shape, args.device)
    spec = SHAPES[args.shape]
    rng = random.Random(0)
    prompts = [
        [rng.randrange(1000, spec["vocab_size"]) for _ in range(args.prompt)]
        for _ in range(max(levels))
    ]
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    params = sum(p.numel() for p in skeleton.parameters())
    report: dict[str, Any] = {"device": name, "shape": args.shape, "params": params, "rows": []}
    context = args.prompt + args.new // 2

    def row(path_name: str, batch: int, tps: float, ttft: float | None = None) -> None:
        roof = roofline_tps(params, spec, batch, context, bw) if bw else 0.0
        report["rows"].append(
            {
                "path": path_name,
                "concurrency": batch,
                "tokens_per_s": round(tps, 1),
                "ttft_p50_ms": None if ttft is None else round(ttft, 1),
                "roofline_share": round(tps / roof, 4) if roof else None,
            }
        )
        share = f"{tps / roof:.1%}" if roof else "-"
        ttft_s = "-" if ttft is None else f"{ttft:.0f}"
        print(f"| {path_name} | {batch} | {tps:,.0f} | {ttft_s} | {share} |", flush=True)

    print(
        f"{name}, {args.shape} ({params / 1e9:.2f}B params), prompt {args.prompt}, new {args.new}"
    )
    print("| path | concurrency | tokens/s | TTFT p50 ms | of roofline |")
    print("| --- | --- | --- | --- | --- |")
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    for batch in () if only else (1, max(levels)):
        n = batch if batch > 1 else 2
        row(
            "model.generate (static batch)",
            batch,
            hf_generate(path, prompts[:n], args.new, batch, args.device),
        )
    rows = max(levels)
    slots = {"batching": "slots", "max_batch": rows}
    variants: dict[str, dict[str, Any]] = {
        "engine, slot batch + CUDA graphs (default)": slots,
        "engine, slot batch, eager": {**slots, "cuda_graphs": False},
        "engine, padded batch": {"batching": "padded", "max_batch": rows},
        "engine, continuous batching": {"batching": "continuous"},
    }
    if args.device == "cuda":
        variants["engine, continuous batching + CUDA graphs"] = {
            "batching": "continuous",
            "use_cuda_graph": True,
        }
    lora_label = "engine, slot batch, 8 LoRA adapters mixed (eager steps)"
    if not only or any(w in lora_label for w in only):
        variants[lora_label] = {**slots, "adapters": build_adapters(path, 8)}
    if only:
        variants = {k: v for k, v in variants.items() if any(w in k for w in only)}
    for label, batching in variants.items():
        try:
            results = await engine_tps(path, prompts, args.new, levels, args.device, **batching)
        except Exception as exc:  # one variant failing must not lose the others' figures
            print(f"| {label} | failed: {type(exc).__name__}: {str(exc)[:120]} | | | |")
            continue
        for c, r in results.items():
            if c == "graphs":
                report.setdefault("graphs", {})[label] = r
                continue
            row(label, c, r["tokens_per_s"], r["ttft_p50_ms"])
    try:
        report["graphs_agree"] = await graphs_agree(path, prompts[:8], args.device)
    except Exception as exc:
        report["graphs_agree"] = f"failed: {type(exc).__name__}: {exc}"
    print(f"\nCUDA graphs: {report.get('graphs')}")
    print(f"greedy answers, slot batch with graphs vs eager: {report['graphs_agree']}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_engine_bench.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
