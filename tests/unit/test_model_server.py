"""A self-hosted model behind the gateway: the tiny local model through the transformers
engine, driven by the official openai SDK (in-process, no Ray)."""

from __future__ import annotations

import openai
import pytest

from forge.config import PlatformConfig
from serve.models.tiny import TinyModelSpec, build_tiny_model
from tests.engines.conformance import CITY_DAYS, called_and_answered
from tests.unit.harness import in_process_gateway, usage_rows

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), TinyModelSpec(corpus_files=40)))


@pytest.fixture
async def gw(tiny_path, sqlite_engine):
    config = PlatformConfig.model_validate(
        {
            "providers": [{"name": "local", "type": "transformers", "model_path": tiny_path}],
            "models": [{"name": "tiny-llama", "provider": "local", "context_window": 2048}],
        }
    )
    async with in_process_gateway(config, sqlite_engine) as h:
        yield h


async def test_chat_stream_and_exact_usage(gw):
    client = gw.sdk()
    c = await client.chat.completions.create(
        model="tiny-llama",
        max_tokens=8,
        temperature=0,
        messages=[{"role": "user", "content": "def f():"}],
    )
    assert c.model == "tiny-llama" and c.choices[0].finish_reason in ("length", "stop")
    assert c.usage.completion_tokens <= 8 and c.usage.prompt_tokens > 3
    stream = await client.chat.completions.create(
        model="tiny-llama",
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "def f():"}],
    )
    chunks = [x async for x in stream]
    text = "".join(x.choices[0].delta.content or "" for x in chunks if x.choices)
    assert text == c.choices[0].message.content  # greedy: the same answer both ways
    assert chunks[-1].usage.completion_tokens == c.usage.completion_tokens
    rows = await usage_rows(gw)
    assert len(rows) == 2 and not any(r["usage_estimated"] for r in rows)


async def test_completions_endpoint(gw):
    c = await gw.sdk().completions.create(model="tiny-llama", prompt="import", max_tokens=4)
    assert c.choices[0].finish_reason in ("length", "stop") and c.usage.completion_tokens <= 4


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"max_tokens": 5000}, "max_tokens"),
    ],
)
async def test_what_it_cannot_do_is_400(gw, extra, param):
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "hi"}], **extra
        )
    assert err.value.body["param"] == param


async def test_an_empty_prompt_is_400_and_top_p_0_is_greedy(gw):
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().completions.create(model="tiny-llama", prompt="", max_tokens=4)
    assert err.value.body["param"] == "prompt"
    ask = {"model": "tiny-llama", "max_tokens": 6, "messages": [{"role": "user", "content": "a"}]}
    greedy = await gw.sdk().chat.completions.create(temperature=0, **ask)
    top_p_0 = await gw.sdk().chat.completions.create(temperature=1.5, top_p=0, **ask)
    assert top_p_0.choices[0].message.content == greedy.choices[0].message.content


async def test_an_unset_max_tokens_means_256_capped_by_the_room_in_the_window(gw):
    """The README's default, tested: at most 256 new tokens, fewer when the prompt leaves
    less room in the context window."""
    client = gw.sdk()
    c = await client.chat.completions.create(
        model="tiny-llama", temperature=0, messages=[{"role": "user", "content": "def f():"}]
    )
    assert c.usage.completion_tokens <= 256
    if c.choices[0].finish_reason == "length":
        assert c.usage.completion_tokens == 256
    long_prompt = "x = 1\n" * 480  # most of the 2,048-token window
    c = await client.chat.completions.create(
        model="tiny-llama", temperature=0, messages=[{"role": "user", "content": long_prompt}]
    )
    room = 2048 - c.usage.prompt_tokens
    assert 0 < room < 256 and c.usage.completion_tokens <= room


REPLY_SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"enum": ["yes", "no", "maybe"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
        "note": {"type": "string", "maxLength": 8},
    },
    "required": ["verdict", "score", "note"],
    "additionalProperties": False,
}


async def test_response_format_is_enforced_by_constrained_decoding(gw):
    import json

    import jsonschema

    client = gw.sdk()
    ask = {
        "model": "tiny-llama",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Rate it."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "rating", "schema": REPLY_SCHEMA, "strict": True},
        },
    }
    c = await client.chat.completions.create(temperature=0, **ask)
    assert c.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(c.choices[0].message.content), REPLY_SCHEMA)
    stream = await client.chat.completions.create(temperature=0, stream=True, **ask)
    text = "".join([x.choices[0].delta.content or "" async for x in stream if x.choices])
    assert text == c.choices[0].message.content
    plain = await client.chat.completions.create(
        model="tiny-llama",
        max_tokens=128,
        temperature=0.7,
        seed=1,
        messages=[{"role": "user", "content": "JSON"}],
        response_format={"type": "json_object"},
    )
    if plain.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(plain.choices[0].message.content), dict)


@pytest.mark.parametrize(
    ("response_format", "code", "named"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": []}}, "invalid_value", ""),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}},
            "invalid_value",
            "",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}},
            },
            "unsupported_parameter",
            "uniqueItems",
        ),
    ],
)
async def test_a_response_format_it_cannot_enforce_is_400(gw, response_format, code, named):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            await gw.sdk().chat.completions.create(
                model="tiny-llama",
                messages=[{"role": "user", "content": "hi"}],
                response_format=response_format,
                stream=stream,
            )
        body = err.value.body
        assert body["param"] == "response_format.json_schema.schema" and body["code"] == code
        assert named in body["message"]


def test_an_engine_without_structured_outputs_refuses_response_format():
    """An engine without constrained decoding: a 400 naming the field, not an
    unconstrained answer."""
    from forge.config import ProviderConfig
    from forge.errors import InvalidRequest
    from serve.models.server import ModelServerProvider

    class NotStructured:
        kind = "vllm"
        supports_structured_outputs = False

        async def load_adapter(self, name, path): ...

        async def unload_adapter(self, name): ...

    cfg = ProviderConfig(name="v", type="vllm", model_path="m")
    server = ModelServerProvider(cfg, engine=NotStructured())  # type: ignore[arg-type]
    assert server._constraint("chat/completions", {"type": "text"}) is None
    with pytest.raises(InvalidRequest) as err:
        server._constraint("chat/completions", {"type": "json_object"})
    assert err.value.param == "response_format" and err.value.code == "unsupported_parameter"


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": CITY_DAYS,
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]


def _valid_call(call, tools=(WEATHER, CLOCK)):
    import json

    import jsonschema

    schema = next(t for t in tools if t["function"]["name"] == call.function.name)
    jsonschema.validate(json.loads(call.function.arguments), schema["function"]["parameters"])
    assert call.type == "function" and call.id.startswith("call_")


async def test_a_named_tool_choice_is_a_call_that_matches_its_schema_streamed_or_not(gw):
    client = gw.sdk()
    ask = {
        "model": "tiny-llama",
        "messages": ASK,
        "tools": [WEATHER, CLOCK],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0,
        "max_tokens": 64,
    }
    c = await client.chat.completions.create(**ask)
    choice = c.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    _valid_call(call)
    stream = await client.chat.completions.create(stream=True, **ask)
    chunks = [x async for x in stream if x.choices]
    deltas = [d for x in chunks for d in (x.choices[0].delta.tool_calls or [])]
    assert len(deltas) > 1  # the arguments arrive as they are generated
    assert deltas[0].function.name == "get_weather" and deltas[0].id.startswith("call_")
    assert "".join(d.function.arguments for d in deltas) == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_required_calls_name_given_tools_and_parallel_false_makes_one(gw):
    client = gw.sdk()
    for seed in range(3):
        c = await client.chat.completions.create(
            model="tiny-llama",
            messages=ASK,
            tools=[WEATHER, CLOCK],
            tool_choice="required",
            temperature=1.0,
            seed=seed,
            max_tokens=200,
        )
        if c.choices[0].finish_reason == "length":
            continue  # a random model may ramble to max_tokens inside a string
        assert c.choices[0].finish_reason == "tool_calls"
        for call in c.choices[0].message.tool_calls:
            _valid_call(call)
    one = await client.chat.completions.create(
        model="tiny-llama",
        messages=ASK,
        tools=[CLOCK],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=64,
    )
    assert len(one.choices[0].message.tool_calls) == 1
    _valid_call(one.choices[0].message.tool_calls[0])


async def test_a_tool_round_trip_renders_calls_and_results_and_none_renders_no_tools(gw):
    client = gw.sdk()
    base = {"model": "tiny-llama", "temperature": 0, "max_tokens": 4}
    plain = await client.chat.completions.create(messages=ASK, **base)
    none = await client.chat.completions.create(
        messages=ASK, tools=[WEATHER], tool_choice="none", **base
    )
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens  # no tools rendered
    assert none.choices[0].message.tool_calls is None
    auto = await client.chat.completions.create(messages=ASK, tools=[WEATHER], **base)
    assert auto.usage.prompt_tokens > plain.usage.prompt_tokens + 20  # the tool is in it
    history = called_and_answered(ASK[0]["content"], '{"city": "Oslo", "days": 1}', "Sunny.")
    answer = await client.chat.completions.create(messages=history, tools=[WEATHER], **base)
    assert answer.usage.prompt_tokens > auto.usage.prompt_tokens + 15


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "f"}}},
            "tool_choice",
            "invalid_value",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "array", "uniqueItems": True},
                        },
                    }
                ],
                "tool_choice": {"type": "function", "function": {"name": "f"}},
            },
            "tools[0].function.parameters",
            "unsupported_parameter",
        ),
        (
            {
                "tools": [WEATHER],
                "tool_choice": "required",
                "response_format": {"type": "json_object"},
            },
            "response_format",
            "unsupported_parameter",
        ),
    ],
)
async def test_tool_requests_it_cannot_serve_are_400(gw, extra, param, code):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            await gw.sdk().chat.completions.create(
                model="tiny-llama", messages=ASK, stream=stream, **extra
            )
        assert err.value.body["param"] == param and err.value.body["code"] == code


async def test_responses_with_a_function_tool_on_the_self_hosted_model(gw):
    """The Responses route over the self-hosted chat path: a forced call, plain and
    streamed (its arguments as ``function_call_arguments.delta`` events while generated)."""
    import json

    client = gw.sdk()
    tool = {"type": "function", **WEATHER["function"], "strict": True}
    ask = {
        "model": "tiny-llama",
        "input": "Weather in Oslo?",
        "tools": [tool],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "temperature": 0,
        "max_output_tokens": 64,
        "store": False,
    }
    r = await client.responses.create(**ask)
    [call] = [item for item in r.output if item.type == "function_call"]
    assert call.name == "get_weather" and set(json.loads(call.arguments)) == {"city", "days"}
    async with client.responses.stream(**ask) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 1 and "".join(deltas) == call.arguments
    assert final.output[0].type == "function_call" and final.output[0].arguments == call.arguments
    one = await client.responses.create(
        **{**ask, "tool_choice": "required", "parallel_tool_calls": False}
    )
    assert [item.type for item in one.output] == ["function_call"]
