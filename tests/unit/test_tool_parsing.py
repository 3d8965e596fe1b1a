"""Tool requests checked, and model text split into content and tool calls, per family
(no engine: these are the plain classes the model server runs)."""

from __future__ import annotations

import json
import random

import pytest

from forge.errors import InvalidRequest
from serve.structured.tool_parsers import (
    FAMILIES,
    CallDelta,
    Piece,
    RequiredCalls,
    TaggedCalls,
    ToolStream,
    detect_family,
    tool_stream,
)
from serve.structured.tools import calls_schema, parse_tools, template_messages
from tests.engines.conformance import called_and_answered

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def run(stream: ToolStream, text: str, seed: int = 0) -> tuple[str, list[dict]]:
    """Feed ``text`` in random-sized pieces; the content and the calls put together."""
    rng = random.Random(seed)
    pieces: list[Piece] = []
    at = 0
    while at < len(text):
        size = rng.randint(1, 7)
        pieces += stream.feed(text[at : at + size])
        at += size
    pieces += stream.finish()
    content = "".join(p for p in pieces if isinstance(p, str))
    calls: dict[int, dict] = {}
    for p in pieces:
        if isinstance(p, CallDelta):
            entry = calls.setdefault(p.index, {"name": p.name, "id": p.id, "arguments": ""})
            entry["arguments"] += p.arguments
    return content, [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("seed", range(5))
def test_hermes_calls_after_text_whatever_the_chunking(seed):
    text = (
        "Let me look. <tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    )
    content, calls = run(TaggedCalls(FAMILIES["hermes"]), text, seed)
    assert content == "Let me look. "
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
    assert json.loads(calls[1]["arguments"]) == {}
    assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]


def test_hermes_text_that_only_looks_like_a_marker_is_content():
    text = "a < b and <tool is not a call; <tool_call>not json</tool_call> either"
    content, calls = run(TaggedCalls(FAMILIES["hermes"]), text)
    assert content == text and calls == []


def test_hermes_a_call_cut_short_comes_back_as_text():
    content, calls = run(TaggedCalls(FAMILIES["hermes"]), 'ok <tool_call>{"name": "get_')
    assert content == 'ok <tool_call>{"name": "get_' and calls == []


def test_hermes_holds_back_only_what_could_still_be_a_marker():
    stream = TaggedCalls(FAMILIES["hermes"])
    assert stream.feed("hello <tool") == ["hello "]
    assert stream.feed("s>") == ["<tools>"]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        '  {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}',
    ],
)
def test_llama3_json_answers(text):
    content, calls = run(TaggedCalls(FAMILIES["llama3_json"]), text)
    assert content == "" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}


def test_llama3_several_calls_and_plain_prose():
    text = '{"name": "get_time", "parameters": {}}; {"name": "get_time", "parameters": {}}'
    _, calls = run(TaggedCalls(FAMILIES["llama3_json"]), text)
    assert [c["name"] for c in calls] == ["get_time", "get_time"]
    content, calls = run(TaggedCalls(FAMILIES["llama3_json"]), "It is {sunny} today.")
    assert content == "It is {sunny} today." and calls == []
    content, calls = run(TaggedCalls(FAMILIES["llama3_json"]), "{not a call}")
    assert content == "{not a call}" and calls == []


@pytest.mark.parametrize("marker", ["[TOOL_CALLS]", ""])
def test_mistral_calls_with_or_without_the_dropped_special_token(marker):
    text = marker + '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]'
    content, calls = run(TaggedCalls(FAMILIES["mistral"]), text)
    assert content == "" and calls[0]["name"] == "get_weather"


def test_mistral_v11_calls_name_then_args():
    text = '[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}[TOOL_CALLS]get_time[ARGS]{}'
    content, calls = run(TaggedCalls(FAMILIES["mistral"]), "Sure. " + text)
    assert content == "Sure. " and [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
    assert FAMILIES["mistral"].markers == ("[TOOL_CALLS]", "[ARGS]")
    content, calls = run(TaggedCalls(FAMILIES["mistral"]), "[TOOL_CALLS]get_weather[ARGS]{bad")
    assert content == "[TOOL_CALLS]get_weather[ARGS]{bad" and calls == []


def test_detect_family_from_the_chat_template():
    from serve.models.tiny import CHAT_TEMPLATE

    assert detect_family(CHAT_TEMPLATE) == "hermes"
    assert detect_family("{{ '[TOOL_CALLS]' }}") == "mistral"
    assert detect_family("{% if role == 'ipython' %}") == "llama3_json"
    assert detect_family("{{ messages }}") is None


def test_required_calls_from_the_constrained_array():
    stream = tool_stream(parse_tools({"tools": [WEATHER], "tool_choice": "required"}), None)
    assert isinstance(stream, RequiredCalls)
    content, calls = run(stream, '[{"name":"get_weather","parameters":{"city":"Oslo"}}]')
    assert content == "" and calls[0]["name"] == "get_weather" and stream.calls == 1
    content, calls = run(
        tool_stream(parse_tools({"tools": [WEATHER], "tool_choice": "required"}), None),
        '[{"name":"get_wea',
    )
    assert content == '[{"name":"get_wea' and calls == []  # cut by max_tokens


def test_a_named_call_streams_its_arguments():
    plan = parse_tools(
        {
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }
    )
    stream = tool_stream(plan, "hermes")
    first, second = stream.feed('{"city"'), stream.feed(': "Oslo"}')
    assert isinstance(first[0], CallDelta) and first[0].name == "get_weather"
    assert first[0].openai()["type"] == "function" and "id" not in second[0].openai()
    assert stream.finish() == [] and stream.calls == 1


def test_plans_per_tool_choice():
    assert parse_tools({}) is None
    auto = parse_tools({"tools": [WEATHER, TIME]})
    assert auto is not None and auto.mode == "auto" and auto.constraint is None
    assert auto.tools[1]["function"]["parameters"] == {"type": "object", "properties": {}}
    none = parse_tools({"tools": [WEATHER], "tool_choice": "none"})
    assert none is not None and none.rendered is None
    named = parse_tools(
        {
            "tools": [WEATHER, TIME],
            "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        }
    )
    assert named is not None and named.constraint is not None
    assert named.constraint.param == "tools[1].function.parameters"
    required = parse_tools({"tools": [WEATHER, TIME], "tool_choice": "required"})
    assert required is not None and required.constraint is not None
    one = calls_schema(required.tools, parallel=False)
    assert one["maxItems"] == 1 and len(one["items"]["anyOf"]) == 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tools": {"a": 1}}, "tools"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
    ],
)
def test_malformed_tool_requests_are_400_naming_the_field(body, param):
    with pytest.raises(InvalidRequest) as err:
        parse_tools(body)
    assert err.value.param == param and err.value.status_code == 400


def test_template_messages_give_templates_objects_and_names():
    conversation = called_and_answered("?", '{"city": "Oslo"}', "sunny")
    conversation[0]["content"] = [{"type": "text", "text": "weather?"}]
    messages = template_messages(conversation)
    assert messages[0]["content"] == "weather?" and messages[1]["content"] == ""
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert messages[2]["name"] == "get_weather"
    with pytest.raises(InvalidRequest) as err:
        template_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    assert err.value.param == "messages[0].content[0]"
