"""Multi-LoRA throughput: streams spread over several adapters in one mixed padded batch
(each row through its own adapter) against one padded batch per adapter (each over a
copy of the model sharing the base tensors, with PEFT's wrappers: what the transformers
engine did before), same run, same model. The base model alone, all
streams in one batch, is the ceiling.

    .venv/bin/python -m bench.lora_bench [--adapters 4] [--tokens 64] [--shape small]

Drives the batch loops directly (no tokenizer, no HTTP): what differs is only how the
adapters share the steps.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.engine_bench import SHAPES
from serve.models.engine import SamplingParams
from serve.models.multi_lora import read_adapter
from serve.models.padded_batching import PaddedBatcher
from serve.models.tiny import build_tiny_adapter, build_tiny_model, is_built


def per_adapter_batchers(base: Any, adapters: dict[str, Path]) -> dict[str | None, Any]:
    """One batch loop per adapter, each over a copy of ``base`` sharing its tensors."""
    from peft import PeftModel

    batchers: dict[str | None, Any] = {}
    for name, path in adapters.items():
        shared = {id(t): t for t in itertools.chain(base.parameters(), base.buffers())}
        clone = PeftModel.from_pretrained(copy.deepcopy(base, shared), str(path)).eval()
        batchers[name] = PaddedBatcher(clone.base_model.model, eos_token_ids=[])
    return batchers


async def run(
    batchers: dict[str | None, PaddedBatcher], streams: list[str | None], tokens: int
) -> float:
    """Output tokens/s with one request per stream, all at once; ``eos_token_ids=[]`` so
    every request makes exactly ``tokens``."""
    done = [asyncio.Event() for _ in streams]
    params = SamplingParams(max_tokens=tokens, temperature=0)
    prompt = list(range(5, 37))
    t0 = time.perf_counter()
    for i, adapter in enumerate(streams):
        batcher = batchers.get(adapter) or batchers[None]
        mixed = adapter if adapter in batcher.model.adapters else None

        def handler(result: Any, event: asyncio.Event = done[i]) -> None:
            if result.finished:
                event.set()

        batcher.submit(prompt, params, handler, mixed)
    await asyncio.gather(*(e.wait() for e in done))
    return len(streams) * tokens / (time.perf_counter() - t0)


async def main() -> None:
    import transformers

    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    args = ap.parse_args()
    root = Path(tempfile.gettempdir()) / f"forge-lora-bench-{args.shape}"
    path = root / "base"
    if not is_built(path):
        build_tiny_model(path, SHAPES[args.shape])
    adapters = {
        f"a{i}": build_tiny_adapter(path, root / f"a{i}", seed=i, rank=8)
        for i in range(args.adapters)
    }
    load = transformers.AutoModelForCausalLM.from_pretrained
    mixed = PaddedBatcher(load(path).eval(), eos_token_ids=[])
    for name, adapter_path in adapters.items():
        mixed.model.add(name, read_adapter(adapter_path))
    base_only = PaddedBatcher(load(path).eval(), eos_token_ids=[])
    separate = per_adapter_batchers(load(path).eval(), adapters)
    loops = [mixed, base_only, *separate.values()]
    for loop in loops:
        loop.start()
    names = list(adapters)
    print(f"model: {path}, {args.adapters} adapters, {args.tokens} tokens per request")
    print("| streams | one batch per adapter tok/s | mixed batch tok/s | mixed / per-adapter |")
    print("| --- | --- | --- | --- |")
    base_line = []
    for streams in (8, 32):
        spread = [names[i % len(names)] for i in range(streams)]
        await run({None: mixed}, spread[:8], 8)  # warm-up
        # Alternating, median of three: this 2-core machine is noisy.
        pairs = [
            (
                await run(separate, spread, args.tokens),
                await run({None: mixed}, spread, args.tokens),
            )
            for _ in "abc"
        ]
        sep = sorted(p[0] for p in pairs)[1]
        mix = sorted(p[1] for p in pairs)[1]
        ceiling = sorted(
            [await run({None: base_only}, [None] * streams, args.tokens) for _ in "abc"]
        )[1]
        base_line.append((streams, ceiling, mix))
        print(f"| {streams} | {sep:.0f} | {mix:.0f} | {mix / sep:.2f} |")
    for streams, ceiling, mix in base_line:
        print(
            f"base model alone, {streams} streams in one batch: {ceiling:.0f} tok/s "
            f"(mixed adapters reach {mix / ceiling:.2f} of it)"
        )
    for loop in loops:
        loop.stop()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    asyncio.run(main())
