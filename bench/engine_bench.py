"""Engine throughput: the transformers engine (continuous batching) at concurrency 1, 8
and 32 against plain ``model.generate`` serving one request at a time, same run, same model.

    .venv/bin/python -m bench.engine_bench [--model PATH] [--tokens 64]

Without ``--model`` it builds the tiny local model. Greedy decoding, a fixed number of new
tokens per request (eos ignored by counting only what was produced).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

from serve.models.engine import SamplingParams
from serve.models.tiny import build_tiny_model, is_built
from serve.models.transformers_engine import TransformersEngine


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def baseline(path: str, prompts: list[list[int]], tokens: int) -> tuple[float, float]:
    """tokens/s and mean TTFT (= one request's whole time) serving one at a time."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
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
    engine: TransformersEngine, prompts: list[list[int]], tokens: int, concurrency: int
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
    args = ap.parse_args()
    path = args.model or os.path.join(tempfile.gettempdir(), "forge-bench-tiny")
    if not args.model and not is_built(path):
        build_tiny_model(path)
    engine = TransformersEngine(path, num_blocks=512, page_size=32, max_batch_tokens=2048)
    await engine.start()
    prompts = [
        engine.encode_chat([{"role": "user", "content": f"def f{i}(x): return x * {i}"}])
        for i in range(32)
    ]
    base_tps, base_ttft = await asyncio.to_thread(baseline, path, prompts[:8], args.tokens)
    print("| path | concurrency | tokens/s | TTFT p50 ms | vs one-at-a-time |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| model.generate, one at a time | 1 | {base_tps:.0f} | {base_ttft:.0f} | 1.0 |")
    for c in (1, 8, 32):
        tps, ttft = await engine_run(engine, prompts[: max(8, c)], args.tokens, c)
        print(f"| transformers engine | {c} | {tps:.0f} | {ttft:.0f} | {tps / base_tps:.1f} |")
    print(f"\nRSS of this process (engine + baseline model): {rss_mb():.0f} MiB")
    await engine.stop()


if __name__ == "__main__":
    asyncio.run(main())
