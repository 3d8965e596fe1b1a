"""Structured outputs' cost on the transformers engine: throughput of rows constrained by
a JSON schema against the same rows unconstrained (same engine, same run), time to first
token cold (a schema's first use: compile) vs cached vs unconstrained, and the grammar's
share of a step (fill + apply + consume) per batch size.

    .venv/bin/python -m bench.structured_bench [--batching slots padded] [--rounds 3]

The tiny local model (random weights), greedy; every constrained row's schema stays open
for about 64 tokens (16 strings of up to 8 characters). Goal: constrained tokens/s at
least 0.8x unconstrained at concurrency 8 and 32.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from serve.models.engine import SamplingParams
from serve.models.tiny import TinyModelSpec, build_tiny_model
from serve.structured.spec import Constraint, parse_response_format

OPEN_64 = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "string", "maxLength": 8},
            "minItems": 16,
            "maxItems": 16,
        }
    },
    "required": ["items"],
}


def constraint(schema: dict[str, Any]) -> Constraint:
    c = parse_response_format(
        {"type": "json_schema", "json_schema": {"name": "b", "schema": schema}}
    )
    assert c is not None
    return c


async def one(engine: Any, prompt: list[int], params: SamplingParams) -> tuple[int, float]:
    """Tokens generated and seconds to the first output."""
    t0 = time.perf_counter()
    first, tokens = 0.0, 0
    async for out in engine.generate(prompt, params):
        if not first:
            first = time.perf_counter() - t0
        tokens = out.completion_tokens
    return tokens, first


async def throughput(
    engine: Any, prompts: list[list[int]], params: list[SamplingParams]
) -> tuple[float, list[int]]:
    """tokens/s of the rows together, and each row's tokens."""
    t0 = time.perf_counter()
    done = await asyncio.gather(*(one(engine, p, q) for p, q in zip(prompts, params, strict=True)))
    return sum(t for t, _ in done) / (time.perf_counter() - t0), [t for t, _ in done]


async def step_cost(engine: Any, rows: int, steps: int = 64) -> float:
    """Microseconds a step of ``rows`` constrained rows spends on the grammar."""
    import torch

    from serve.structured.mask import GrammarMask, consume

    cache = await engine._grammar_cache()
    c = constraint(OPEN_64)
    matchers = [cache.matcher(c) for _ in range(rows)]
    mask = GrammarMask(rows, cache.n_vocab)
    eos = set(engine._eos_ids(engine._model))
    gen = torch.Generator().manual_seed(0)
    spent = 0.0
    for _ in range(steps):
        logits = torch.randn(rows, cache.n_vocab, generator=gen)
        t0 = time.perf_counter()
        mask.apply(logits, list(range(rows)), matchers)
        for m, token in zip(matchers, logits.argmax(-1).tolist(), strict=True):
            consume(m, token, eos)
        spent += time.perf_counter() - t0
    return spent / steps * 1e6


async def bench(path: Path, batching: str, rounds: int) -> list[str]:
    from serve.models.transformers_engine import TransformersEngine

    engine = TransformersEngine(path, batching=batching)
    await engine.start()
    lines = []
    try:
        chat = [engine.encode_chat([{"role": "user", "content": f"List {i}."}]) for i in range(32)]
        schema = constraint(OPEN_64)
        constrained = SamplingParams(max_tokens=256, temperature=0, constraint=schema)
        # Warm-up, the schema compiled, and each row's length: greedy, so the same every
        # time; the unconstrained rows generate as many tokens each (the same batch
        # occupancy: a long row's tail costs both sides alike).
        _, lengths = await throughput(engine, chat, [constrained] * len(chat))
        free = [SamplingParams(max_tokens=n, temperature=0) for n in lengths]
        await throughput(engine, chat[:8], free[:8])
        for n in (8, 32):
            with_grammar, without = [], []
            for _ in range(rounds):  # interleaved: drift in the machine's load hits both
                with_grammar.append((await throughput(engine, chat[:n], [constrained] * n))[0])
                without.append((await throughput(engine, chat[:n], free[:n]))[0])
            a, b = statistics.median(with_grammar), statistics.median(without)
            lines.append(
                f"| {batching} | {n} | {a:,.0f} | {b:,.0f} | {a / b:.2f} | "
                f"{await step_cost(engine, n):,.0f} |"
            )
        ttft: dict[str, list[float]] = {"cold": [], "cached": [], "none": []}
        for i in range(5):
            fresh = constraint({**OPEN_64, "title": f"cold-{batching}-{i}"})  # a new grammar
            ttft["cold"].append(
                (
                    await one(
                        engine,
                        chat[0],
                        SamplingParams(max_tokens=1, temperature=0, constraint=fresh),
                    )
                )[1]
            )
            ttft["cached"].append(
                (
                    await one(
                        engine,
                        chat[0],
                        SamplingParams(max_tokens=1, temperature=0, constraint=fresh),
                    )
                )[1]
            )
            ttft["none"].append(
                (await one(engine, chat[0], SamplingParams(max_tokens=1, temperature=0)))[1]
            )
        ms = {k: statistics.median(v) * 1e3 for k, v in ttft.items()}
        lines.append(
            f"| {batching} | TTFT ms | cold {ms['cold']:.1f} | cached {ms['cached']:.1f} | "
            f"unconstrained {ms['none']:.1f} | |"
        )
    finally:
        await engine.stop()
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batching", nargs="+", default=["slots", "padded"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = build_tiny_model(Path(tempfile.mkdtemp()) / "tiny", TinyModelSpec())
    rows = [
        "| batching | streams | constrained tok/s | unconstrained tok/s | ratio "
        "| grammar µs/step |",
        "|---|---|---|---|---|---|",
    ]
    for batching in args.batching:
        rows += await bench(path, batching, args.rounds)
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
