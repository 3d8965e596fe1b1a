"""The OpenAI chat request model: it takes what OpenAI's spec takes, and refuses the rest
with the client's own path to the field (``param``), as the gateway reports it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from forge.protocol.openai import ChatCompletionRequest
from gateway.errors import validation_error

USER = {"role": "user", "content": "Hello!"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
PNG = "data:image/png;base64,iVBORw0KGgo="

# The request examples of OpenAI's spec (CreateChatCompletionRequest), then the shapes its
# schemas allow that clients send.
ACCEPTED = [
    [{"role": "developer", "content": "You are a helpful assistant."}, USER],
    {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                ],
            }
        ],
        "max_tokens": 300,
    },
    {"messages": [USER], "stream": True},
    {"messages": [USER], "tools": [WEATHER], "tool_choice": "auto"},
    {"messages": [USER], "logprobs": True, "top_logprobs": 2},
    [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}], "name": "ops"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-1"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": PNG}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "ok"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "refusal", "refusal": "no"}],
            "refusal": None,
            "audio": {"id": "audio_1"},
        },
        {"role": "assistant", "tool_calls": [], "function_call": {"name": "f", "arguments": ""}},
        {"role": "function", "name": "f", "content": None},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "g", "input": "x"}}],
        },
    ],
    {
        "messages": [USER],
        "tools": [
            WEATHER,
            {"type": "function", "function": {"name": "f", "strict": True, "parameters": {}}},
            {"type": "custom", "custom": {"name": "g", "format": {"type": "text"}}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_current_weather"}},
        "parallel_tool_calls": False,
    },
    {
        "messages": [USER],
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [{"type": "function", "name": "f"}]},
        },
    },
    {"messages": [USER], "tool_choice": {"type": "custom", "custom": {"name": "g"}}},
    {
        "messages": [USER],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": True},
        },
    },
    {"messages": [USER], "response_format": {"type": "json_object"}},
    {"messages": [USER], "response_format": {"type": "text"}},
    {
        "messages": [USER],
        "stop": ["a", "b", "c", "d"],
        "logit_bias": {"50256": -100},
        "stream_options": {"include_usage": True, "include_obfuscation": False},
        "n": 2,
        "max_completion_tokens": 10,
        "modalities": ["text", "audio"],
        "audio": {"voice": {"id": "voice_1"}, "format": "mp3"},
        "prediction": {"type": "content", "content": [{"type": "text", "text": "x"}]},
        "reasoning_effort": "xhigh",
        "verbosity": "low",
        "service_tier": "flex",
        "metadata": {"a": "b"},
        "store": True,
        "seed": 2**40,
        "safety_identifier": "u1",
        "prompt_cache_key": "k",
        "prompt_cache_retention": "24h",
        "web_search_options": {"search_context_size": "low"},
    },
    {"messages": [USER], "stop": "\n", "functions": [{"name": "f"}], "function_call": "auto"},
    {"messages": [USER], "function_call": {"name": "f"}, "some_new_field": {"any": ["thing"]}},
    {"messages": [{**USER, "unknown": 1}, {"role": "assistant", "content": "", "x": None}]},
]


def _body(case: Any) -> dict[str, Any]:
    if isinstance(case, list):
        case = {"messages": case}
    return {"model": "gpt-4o", **case}


@pytest.mark.parametrize("case", ACCEPTED)
def test_what_openai_takes_is_taken(case):
    ChatCompletionRequest.model_validate(_body(case))


def _refuse(case: Any) -> Any:
    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate(_body(case))
    return validation_error(err.value.errors())


@pytest.mark.parametrize(
    ("case", "param"),
    [
        # Once untyped: each crashed a provider's translator, a 503 and a fallback.
        ([{"role": "assistant", "content": "x", "tool_calls": [5]}], "messages[0].tool_calls[0]"),
        (
            [{"role": "assistant", "tool_calls": [{**CALL, "function": 5}]}],
            "messages[0].tool_calls[0].function",
        ),
        ({"messages": [USER], "tools": [{"type": "function", "function": 5}]}, "tools[0].function"),
        (
            {"messages": [USER], "response_format": {"type": "json_schema", "json_schema": 5}},
            "response_format.json_schema",
        ),
        (
            {"messages": [USER], "tool_choice": {"type": "function", "function": 5}},
            "tool_choice.function",
        ),
        # The rest of the schema, each error where the client put it.
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"content": "x"}], "messages[0].role"),
        (["hi"], "messages[0]"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "user", "content": []}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "video"}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": [{"text": "x"}]}], "messages[0].content[0].type"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": "https://x"}]}],
            "messages[0].content[0].image_url",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}],
            "messages[0].content[0].input_audio.format",
        ),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}],
            "messages[0].content[0].type",
        ),
        (
            [{"role": "assistant", "content": [{"type": "refusal", "refusal": 1}]}],
            "messages[0].content[0].refusal",
        ),
        (
            [{"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f"}}]}],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [{"role": "assistant", "tool_calls": [{**CALL, "type": "x"}]}],
            "messages[0].tool_calls[0].type",
        ),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "function", "content": "x"}], "messages[0].name"),
        (
            {"messages": [USER], "tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools[0].function.name",
        ),
        (
            {
                "messages": [USER],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}],
            },
            "tools[0].function.parameters",
        ),
        ({"messages": [USER], "tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"messages": [USER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": [USER], "tool_choice": 1}, "tool_choice"),
        ({"messages": [USER], "tool_choice": {"type": "function"}}, "tool_choice.function"),
        (
            {
                "messages": [USER],
                "tool_choice": {"type": "allowed_tools", "allowed_tools": {"tools": []}},
            },
            "tool_choice.allowed_tools.mode",
        ),
        ({"messages": [USER], "response_format": {"type": "yaml"}}, "response_format.type"),
        (
            {"messages": [USER], "response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema.name",
        ),
        ({"messages": [USER], "stop": 5}, "stop"),
        ({"messages": [USER], "stop": ["a", 5]}, "stop[1]"),
        ({"messages": [USER], "stop": ["a"] * 5}, "stop"),
        ({"messages": [USER], "logit_bias": {"1": 101}}, "logit_bias.1"),
        (
            {"messages": [USER], "stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
        ),
        ({"messages": [USER], "n": 0}, "n"),
        ({"messages": [USER], "max_completion_tokens": "10"}, "max_completion_tokens"),
        ({"messages": [USER], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"messages": [USER], "reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"messages": [USER], "modalities": ["video"]}, "modalities[0]"),
        ({"messages": [USER], "metadata": {"a": 1}}, "metadata.a"),
    ],
)
def test_what_openai_refuses_is_a_400_naming_the_field(case, param):
    error = _refuse(case)
    assert error.param == param, error.message
    assert error.status_code == 400 and param in error.message
