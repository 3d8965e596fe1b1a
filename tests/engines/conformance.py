"""One conformance suite for every engine: subclass ``EngineConformance`` and provide an
``engine`` fixture (started, module-scoped) to run it against a new engine."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from forge.errors import ContextLengthExceeded, InvalidRequest, ServiceUnavailable
from serve.models.engine import EngineOutput, SamplingParams

# A bounded arguments schema: even a random model's constrained output ends in 64 tokens.
CITY_DAYS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}


def called_and_answered(question: str, arguments: str, result: str) -> list[dict[str, Any]]:
    """A conversation in which the assistant called ``get_weather`` and got ``result``."""
    return [
        {"role": "user", "content": question},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]


async def run(engine: Any, prompt: list[int], adapter: str | None = None, **params: Any):
    params.setdefault("temperature", 0)  # greedy unless a test says otherwise
    outs: list[EngineOutput] = [
        o async for o in engine.generate(prompt, SamplingParams(**params), adapter)
    ]
    return "".join(o.text for o in outs), outs


def chat(engine: Any, text: str) -> list[int]:
    return engine.encode_chat([{"role": "user", "content": text}])


async def settled(engine: Any) -> bool:
    """Whether the engine drains to no running request within a few seconds."""
    for _ in range(100):
        if engine.stats().running == 0:
            return True
        await asyncio.sleep(0.05)
    return False


class EngineConformance:
    async def test_streams_deltas_with_exact_counts(self, engine):
        prompt = chat(engine, "def main():")
        _, outs = await run(engine, prompt, max_tokens=12)
        assert len(outs) >= 2  # streamed, not one lump
        last = outs[-1]
        assert last.prompt_tokens == len(prompt)
        assert last.finish_reason in ("length", "stop")
        assert all(o.finish_reason is None for o in outs[:-1])
        if last.finish_reason == "length":
            assert last.completion_tokens == 12
        assert 1 <= last.completion_tokens <= 12

    async def test_max_tokens_and_greedy_determinism(self, engine):
        prompt = chat(engine, "import os")
        a, outs = await run(engine, prompt, max_tokens=5)
        b, _ = await run(engine, prompt, max_tokens=5)
        assert a == b and outs[-1].completion_tokens <= 5

    async def test_stop_string_ends_generation_before_it(self, engine):
        prompt = chat(engine, "class A:")
        full, _ = await run(engine, prompt, max_tokens=24)
        if len(full) < 6:
            pytest.skip("the random model ended too early to pick a stop string")
        stop = full[len(full) // 2 : len(full) // 2 + 2]
        text, outs = await run(engine, prompt, max_tokens=24, stop=[stop])
        assert outs[-1].finish_reason == "stop"
        assert text == full[: full.index(stop)]  # not a character of the stop string sent

    async def test_a_stop_string_frees_the_slot(self, engine):
        prompt = chat(engine, "import sys")
        full, _ = await run(engine, prompt, max_tokens=12)
        if len(full) < 4:
            pytest.skip("the random model ended too early to pick a stop string")
        _, outs = await run(engine, prompt, max_tokens=1500, stop=[full[2:4]])
        assert outs[-1].finish_reason == "stop"
        assert await settled(engine)  # not still decoding towards 1500 tokens

    async def test_an_empty_prompt_is_refused(self, engine):
        with pytest.raises(InvalidRequest):
            await anext(engine.generate([], SamplingParams(max_tokens=4)))
        _, outs = await run(engine, chat(engine, "ok"), max_tokens=2)  # still serving
        assert outs[-1].completion_tokens >= 1

    async def test_concurrent_requests_match_single_ones(self, engine):
        prompts = [chat(engine, f"x = {i}") for i in range(8)]
        singles = [(await run(engine, p, max_tokens=8))[0] for p in prompts[:3]]
        together = await asyncio.gather(*(run(engine, p, max_tokens=8) for p in prompts))
        assert [t for t, _ in together][:3] == singles
        assert all(outs[-1].finish_reason for _, outs in together)

    async def test_cancelled_stream_frees_its_slot(self, engine):
        prompt = chat(engine, "while True:")
        stream = engine.generate(prompt, SamplingParams(max_tokens=1000, temperature=0))
        await anext(stream)
        busy = engine.stats()
        assert busy.running >= 1
        if busy.kv_tokens is not None:  # the engines that say how much KV they hold
            assert busy.kv_tokens >= len(prompt)
            capacity = busy.kv_capacity_tokens
            assert capacity is None or capacity >= busy.kv_tokens
        await stream.aclose()  # what a disconnecting client does
        assert await settled(engine)
        assert engine.stats().kv_tokens in (None, 0)
        _, outs = await asyncio.wait_for(run(engine, prompt, max_tokens=4), 30)
        assert outs[-1].finish_reason in ("length", "stop")

    async def test_prompts_that_cannot_fit_are_refused_before_any_work(self, engine):
        with pytest.raises(ContextLengthExceeded) as err:
            await anext(engine.generate([5] * engine.context_window, SamplingParams(max_tokens=1)))
        assert err.value.status_code == 400 and err.value.code == "context_length_exceeded"
        with pytest.raises(ContextLengthExceeded) as err:
            await anext(
                engine.generate([5, 6, 7], SamplingParams(max_tokens=engine.context_window))
            )
        assert err.value.param == "max_tokens"

    async def test_temperature_and_top_p_apply_per_request(self, engine):
        prompt = chat(engine, "print(")
        hot = {(await run(engine, prompt, max_tokens=12, temperature=1.5))[0] for _ in range(4)}
        assert len(hot) > 1  # sampling at 1.5 over a random model's flat logits
        greedy = {(await run(engine, prompt, max_tokens=12))[0] for _ in range(3)}
        assert len(greedy) == 1
        narrow = {
            (await run(engine, prompt, max_tokens=12, temperature=1.5, top_p=1e-6))[0]
            for _ in range(3)
        }
        assert narrow == greedy  # top_p that keeps one token is greedy again

    async def test_adapters_change_answers_and_batch_together(self, engine, adapter_dirs):
        prompt = chat(engine, "def handler(event):")
        base, _ = await run(engine, prompt, max_tokens=10)
        await engine.load_adapter("support", adapter_dirs["support"])
        await engine.load_adapter("legal", adapter_dirs["legal"])
        try:
            assert sorted(engine.stats().adapters) == ["legal", "support"]
            alone = [(await run(engine, prompt, a, max_tokens=10))[0] for a in ("support", "legal")]
            assert (await run(engine, prompt, max_tokens=10))[0] == base  # base untouched
            assert len({base, *alone}) == 3  # each adapter answers differently
            together = await asyncio.gather(
                *(run(engine, prompt, a, max_tokens=10) for a in ("support", "legal", "support"))
            )
            assert [t for t, _ in together] == [alone[0], alone[1], alone[0]]
            await engine.unload_adapter("legal")
            assert engine.stats().adapters == ["support"]
            with pytest.raises(ServiceUnavailable):
                await run(engine, prompt, "legal", max_tokens=2)
        finally:
            await engine.unload_adapter("support")
            await engine.unload_adapter("legal")

    async def test_base_requests_beside_adapter_requests_are_untouched(self, engine, adapter_dirs):
        prompt = chat(engine, "def handler(event):")
        base, _ = await run(engine, prompt, max_tokens=10)
        await engine.load_adapter("support", adapter_dirs["support"])
        try:
            together = await asyncio.gather(
                run(engine, prompt, max_tokens=10), run(engine, prompt, "support", max_tokens=10)
            )
            assert together[0][0] == base
        finally:
            await engine.unload_adapter("support")


class SeedConformance:
    """For engines that honour a per-request seed."""

    async def test_a_seed_repeats_a_sampled_answer(self, engine):
        prompt = chat(engine, "for i in")
        seeded = {
            (await run(engine, prompt, max_tokens=12, temperature=1.5, seed=7))[0] for _ in range(3)
        }
        assert len(seeded) == 1
        other, _ = await run(engine, prompt, max_tokens=12, temperature=1.5, seed=8)
        assert other not in seeded

    async def test_a_seeded_request_answers_the_same_inside_a_busy_batch(self, engine):
        prompt = chat(engine, "with open(")
        alone, _ = await run(engine, prompt, max_tokens=12, temperature=1.2, seed=11)
        others = [chat(engine, f"y = {i}") for i in range(4)]
        together = await asyncio.gather(
            run(engine, prompt, max_tokens=12, temperature=1.2, seed=11),
            *(run(engine, p, max_tokens=12, temperature=1.2) for p in others),
        )
        assert together[0][0] == alone


# Schemas the random model finishes: every string, number and array bounded.
BOUNDED_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "status": {"enum": ["ok", "fail", "retry"]},
            "count": {"type": "integer", "minimum": 0, "maximum": 99},
        },
        "required": ["status", "count"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "level": {"type": "integer", "minimum": -3, "maximum": 5},
            "ok": {"type": "boolean"},
        },
        "required": ["name", "level", "ok"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 4},
]


def json_schema(schema: dict[str, Any]) -> Any:
    from serve.structured.spec import parse_response_format

    return parse_response_format(
        {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    )


class StructuredConformance:
    """For engines that enforce ``response_format`` (``supports_structured_outputs``)."""

    async def test_constrained_rows_match_their_schemas_beside_untouched_free_rows(self, engine):
        import json

        import jsonschema

        free = [chat(engine, f"x = {i}") for i in range(4)]
        alone = [(await run(engine, p, max_tokens=12))[0] for p in free]
        prompt = chat(engine, "Answer in JSON.")
        asks = [  # (schema, sampling): greedy, sampled, seeded
            (BOUNDED_SCHEMAS[0], {}),
            (BOUNDED_SCHEMAS[1], {"temperature": 1.0}),
            (BOUNDED_SCHEMAS[2], {"temperature": 1.2, "seed": 3}),
            (BOUNDED_SCHEMAS[1], {"temperature": 0.8, "top_p": 0.9}),
        ]
        constrained = [
            run(engine, prompt, max_tokens=64, constraint=json_schema(s), **kw) for s, kw in asks
        ]
        together = await asyncio.gather(
            *(
                x
                for pair in zip(
                    constrained, (run(engine, p, max_tokens=12) for p in free), strict=True
                )
                for x in pair
            )
        )
        for (schema, _), (text, outs) in zip(asks, together[0::2], strict=True):
            assert outs[-1].finish_reason == "stop", text
            jsonschema.validate(json.loads(text), schema)
        assert [text for text, _ in together[1::2]] == alone  # greedy: unchanged
        assert await settled(engine)

    async def test_json_object_and_a_json_cut_by_max_tokens(self, engine):
        import json

        from serve.structured.spec import parse_response_format

        prompt = chat(engine, "JSON please")
        c = parse_response_format({"type": "json_object"})
        text, outs = await run(engine, prompt, max_tokens=64, temperature=1.0, constraint=c)
        if outs[-1].finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
        assert text.startswith("{")
        long = json_schema(BOUNDED_SCHEMAS[1])  # more than 3 tokens, whatever they are
        text, outs = await run(engine, prompt, max_tokens=3, constraint=long)
        assert outs[-1].finish_reason == "length" and outs[-1].completion_tokens == 3
        assert text.startswith('{"')
        short = json_schema({"enum": ["yes", "no"]})
        text, outs = await run(engine, prompt, max_tokens=16, temperature=1.0, constraint=short)
        assert json.loads(text) in ("yes", "no") and outs[-1].finish_reason == "stop"

    async def test_a_schema_it_cannot_enforce_is_a_400_before_any_work(self, engine):
        unique = json_schema({"type": "array", "uniqueItems": True})
        with pytest.raises(InvalidRequest) as err:
            await run(engine, chat(engine, "hi"), max_tokens=4, constraint=unique)
        assert err.value.code == "unsupported_parameter" and "uniqueItems" in err.value.message
        assert await settled(engine)


class JoinConformance:
    """Requests of different lengths joining and leaving a running batch."""

    async def test_requests_joining_a_running_batch_answer_as_alone(self, engine):
        prompts = [
            chat(engine, "def f(x):"),
            chat(engine, "x"),
            chat(engine, "class Parser:\n    def __init__(self, text):\n" * 6),
        ]
        alone = [(await run(engine, p, max_tokens=16))[0] for p in prompts]

        async def staggered(i: int) -> str:
            await asyncio.sleep(0.05 * i)  # the first is decoding when the others join
            return (await run(engine, prompts[i], max_tokens=16))[0]

        assert await asyncio.gather(*(staggered(i) for i in range(3))) == alone

    async def test_a_request_leaving_mid_batch_does_not_disturb_the_rest(self, engine):
        prompts = [chat(engine, f"value_{i} = ") for i in range(3)]
        alone = [(await run(engine, p, max_tokens=16))[0] for p in prompts]
        leaving = engine.generate(prompts[1], SamplingParams(max_tokens=500, temperature=0))
        await anext(leaving)
        stay = asyncio.gather(
            run(engine, prompts[0], max_tokens=16), run(engine, prompts[2], max_tokens=16)
        )
        await asyncio.sleep(0.05)
        await leaving.aclose()
        results = await stay
        assert [results[0][0], results[1][0]] == [alone[0], alone[2]]
        assert await settled(engine)
