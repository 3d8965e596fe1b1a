"""Engine throughput: an engine (transformers' continuous batching, or vLLM) at
concurrency 1, 8 and 32 against plain ``model.generate`` serving one request at a time,
same run, same model.

    .venv/bin/python -m bench.engine_bench [--model PATH] [--tokens 64]
    .venv-vllm/bin/python -m bench.engine_bench --engine vllm     # vLLM's CPU build

Without ``--model`` it builds the tiny local model. Greedy decoding, a fixed number of new
tokens per request (eos ignored by counting only what was produced).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

from serve.models.engine import Engine, SamplingParams
from serve.models.tiny import TinyModelSpec, build_tiny_model, is_built

SHAPES = {
    "tiny": TinyModelSpec(),  # 2 layers, hidden 256: ~1M parameters
    # 4 layers, hidden 768, GQA: ~30M parameters, still seconds to build
    "small": TinyModelSpec(hidden_size=768, layers=4, heads=12, kv_heads=4, intermediate_size=2048),
}


def tree_rss_mb(root: int | None = None) -> float:
    """RSS of this process and its descendants (vLLM runs its engine core in a child)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = set(), {root or os.getpid()}
    while frontier:
        tree |= frontier
        frontier = {p for p, parent in parents.items() if parent in frontier} - tree
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total / 2**20


def make_engine(kind: str, path: str, batching: str = "auto") -> Engine:
    if kind == "vllm":
        from serve.models.vllm_engine import VllmEngine

        return VllmEngine(
            path,
            max_loras=0,
            max_model_len=2048,
            gpu_memory_utilization=0.1,
            engine_args={"dtype": "float32"},
        )
    from serve.models.transformers_engine import TransformersEngine

    return TransformersEngine(path, batching=batching)


def baseline(path: str, prompts: list[list[int]], tokens: int) -> tuple[float, float]:
    """tokens/s and mean TTFT (= one request's whole time) serving one at a time."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.inference_mode():  # warm-up, as the engine gets
        model.generate(torch.tensor([prompts[0]]), max_new_tokens=8, do_sample=False)
    produced, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        for ids in prompts:
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
            )
            produced += out.shape[1] - len(ids)
    wall = time.perf_counter() - t0
    return produced / wall, wall / len(prompts) * 1000


async def engine_run(
    engine: Engine, prompts: list[list[int]], tokens: int, concurrency: int
) -> tuple[float, float]:
    """tokens/s and median time to first token with ``concurrency`` requests in flight."""
    queue = list(prompts)
    ttfts: list[float] = []
    produced = 0

    async def worker() -> None:
        nonlocal produced
        while queue:
            ids = queue.pop()
            t0 = time.perf_counter()
            first = None
            async for out in engine.generate(ids, SamplingParams(max_tokens=tokens, temperature=0)):
                first = first or time.perf_counter()
                last = out
            ttfts.append(((first or time.perf_counter()) - t0) * 1000)
            produced += last.completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return produced / (time.perf_counter() - t0), statistics.median(ttfts)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    ap.add_argument(
        "--batching",
        default="auto",
        help="transformers engine, comma-separated to compare in one run: auto, slots "
        "(auto for Llama-family models), padded, continuous",
    )
    ap.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="tiny",
        help="built model when no --model: the embedded default, or a small one whose "
        "forward is not all framework overhead",
    )
    args = ap.parse_args()
    path = args.model or os.path.join(tempfile.gettempdir(), f"forge-bench-{args.shape}")
    if not args.model and not is_built(path):
        build_tiny_model(path, SHAPES[args.shape])
    print(f"model: {path}")
    batchings = args.batching.split(",") if args.engine == "transformers" else ["auto"]
    engine = make_engine(args.engine, path, batchings[0])
    await engine.start()
    prompts = [
        engine.encode_chat([{"role": "user", "content": f"def f{i}(x): return x * {i}"}])
        for i in range(128)
    ]
    await engine.stop()
    # The baseline runs in its own process: two torch thread pools in one process (the
    # baseline's and the engine's loop thread) fight over the cores and slowed the engine
    # by half when the baseline had run in-process first.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        base_tps, base_ttft = await asyncio.get_running_loop().run_in_executor(
            pool, baseline, path, prompts[:8], args.tokens
        )
    print("| path | concurrency | tokens/s | TTFT p50 ms | vs one-at-a-time |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| model.generate, one at a time | 1 | {base_tps:.0f} | {base_ttft:.0f} | 1.0 |")
    for batching in batchings:
        engine = make_engine(args.engine, path, batching)
        await engine.start()
        engine_rss = tree_rss_mb()
        await engine_run(engine, prompts[:8], 8, 8)  # warm-up
        label = args.engine if args.engine == "vllm" else f"transformers ({batching})"
        for c in (1, 8, 32):
            # Four waves of requests per concurrency, so that ramp-up and drain do not
            # dominate; the median of three runs (this 2-core machine is noisy).
            runs = [
                await engine_run(engine, prompts[: max(16, 4 * c)], args.tokens, c) for _ in "abc"
            ]
            tps, ttft = sorted(runs)[1]
            print(f"| {label} engine | {c} | {tps:.0f} | {ttft:.0f} | {tps / base_tps:.1f} |")
        print(f"| {label}: RSS with the engine loaded (process tree): {engine_rss:.0f} MiB |")
        await engine.stop()


if __name__ == "__main__":  # vLLM spawns processes: the guard is required
    asyncio.run(main())
