"""Per-chunk cost of stream translation, for a 1,000-token stream through each translator.

    .venv/bin/python -m bench.translate_bench

Each figure is the whole per-chunk work on the platform's side of that path (parse the
upstream's event, translate, frame the OpenAI chunk), in microseconds, the median of
several passes; the baseline is parsing and re-framing an OpenAI chunk with no
translation at all, timed in the same run. Goal: under 20 µs per chunk.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import orjson

from forge.protocol.sse import event
from forge.translate import anthropic as tr

TOKENS = 1000
PASSES = 15


def openai_chunks() -> list[bytes]:
    base = {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-upstream",
        "system_fingerprint": "fp",
    }
    return [
        orjson.dumps(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": f" tok{i}"},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
            }
        )
        for i in range(TOKENS)
    ]


def anthropic_events() -> list[bytes]:
    return [
        orjson.dumps(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": f" tok{i}"},
            }
        )
        for i in range(TOKENS)
    ]


def baseline(chunks: list[bytes]) -> None:
    for raw in chunks:
        event(orjson.loads(raw))


def openai_passthrough(chunks: list[bytes]) -> None:
    """What the OpenAI-compatible provider does per chunk (model name put back)."""
    for raw in chunks:
        chunk = orjson.loads(raw)
        chunk["model"] = "public"
        event(chunk)


def anthropic_to_openai(events: list[bytes]) -> None:
    translator = tr.AnthropicStreamToOpenAI("public")
    for raw in events:
        for chunk in translator.feed(orjson.loads(raw)):
            event(chunk)


def openai_to_anthropic(chunks: list[bytes]) -> None:
    """The /v1/messages ingress: OpenAI chunks re-framed as Anthropic events."""
    translator = tr.OpenAIStreamToAnthropic("public")
    for raw in chunks:
        translator.feed(orjson.loads(raw))


def per_chunk_us(fn: Callable[[list[bytes]], None], data: list[bytes]) -> float:
    times = []
    for _ in range(PASSES):
        t0 = time.perf_counter()
        fn(data)
        times.append((time.perf_counter() - t0) / len(data) * 1e6)
    return statistics.median(times)


def main() -> None:
    oa, an = openai_chunks(), anthropic_events()
    rows = [
        ("baseline: parse + frame an OpenAI chunk", per_chunk_us(baseline, oa)),
        ("openai-compatible provider (passthrough)", per_chunk_us(openai_passthrough, oa)),
        (
            "anthropic provider: Anthropic event → OpenAI chunk",
            per_chunk_us(anthropic_to_openai, an),
        ),
        (
            "/v1/messages ingress: OpenAI chunk → Anthropic event",
            per_chunk_us(openai_to_anthropic, oa),
        ),
    ]
    base = rows[0][1]
    print(f"| path ({TOKENS}-token stream) | µs per chunk | ratio to baseline |")
    print("| --- | --- | --- |")
    for name, us in rows:
        print(f"| {name} | {us:.2f} | {us / base:.1f} |")


if __name__ == "__main__":
    main()
