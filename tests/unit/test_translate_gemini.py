"""The Gemini translator: requests, responses, streams and embeddings, with property tests
for what must survive a trip through Gemini's shapes."""

from __future__ import annotations

import base64
import re
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forge.errors import InvalidRequest
from forge.translate import gemini as tr

PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "additionalProperties": False,
        },
    },
}
TIME = {"type": "function", "function": {"name": "time"}}


def user(text="hi"):
    return {"role": "user", "content": text}


def request(**extra):
    return {"model": "gemini-x", "messages": [user()], **extra}


# ----------------------------------------------------------------------------- requests


def test_request_maps_roles_parts_tools_and_sampling():
    body = {
        "model": "gemini-x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.JPG?s=1"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/img"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "time"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": '{"hour": 12}'},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [WEATHER, TIME],
        "temperature": 1.7,
        "top_p": 0.5,
        "max_completion_tokens": 99,
        "max_tokens": 5,
        "stop": "END",
        "n": 3,
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "user": "u-1",
        "parallel_tool_calls": True,
        "stream": True,
    }
    out = tr.to_gemini_request(body)
    assert "model" not in out and "stream" not in out
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use metric."}]}
    first, model, answers = out["contents"]
    assert first["role"] == "user"
    assert first["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": PNG.split(",", 1)[1]}},
        {"fileData": {"fileUri": "https://x.test/cat.JPG?s=1", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://x.test/img"}},
    ]
    assert model == {
        "role": "model",
        "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "time", "args": {}}},
        ],
    }
    # parallel answers and the next user message share one user turn
    assert answers == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "weather", "response": {"output": "sunny"}}},
            {"functionResponse": {"name": "time", "response": {"hour": 12}}},
            {"text": "Thanks"},
        ],
    }
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "description": "Weather in a city",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],
                },
                {"name": "time"},
            ]
        }
    ]
    assert "toolConfig" not in out
    assert out["generationConfig"] == {
        "temperature": 1.7,
        "topP": 0.5,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "maxOutputTokens": 99,
        "stopSequences": ["END"],
        "candidateCount": 3,
    }


def test_minimal_request_has_no_optional_sections():
    out = tr.to_gemini_request(request(n=1, max_tokens=10, stop=["a", "b"]))
    assert out == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 10, "stopSequences": ["a", "b"]},
    }


def test_audio_and_file_parts_go_inline():
    content = [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "report.pdf"}},
        {"type": "text", "text": ""},
    ]
    out = tr.to_gemini_request({"messages": [{"role": "user", "content": content}]})
    assert out["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


def test_consecutive_turns_merge_and_empty_turns_vanish():
    out = tr.to_gemini_request(
        {
            "messages": [
                user("a"),
                user("b"),
                {"role": "assistant", "content": ""},
                user("c"),
                {"role": "assistant", "content": [{"type": "text", "text": "d"}]},
            ]
        }
    )
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}, {"text": "c"}]},
        {"role": "model", "parts": [{"text": "d"}]},
    ]


@pytest.mark.parametrize(
    ("content", "response"),
    [
        ("sunny", {"output": "sunny"}),
        ('{"temp": 21}', {"temp": 21}),
        ("[1, 2]", {"output": "[1, 2]"}),
        ("{not json", {"output": "{not json"}),
        ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], {"output": "ab"}),
    ],
)
def test_tool_results_become_json_objects(content, response):
    messages = [
        user(),
        {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": content},
    ]
    out = tr.to_gemini_request({"messages": messages})
    part = out["contents"][-1]["parts"][0]
    assert part == {"functionResponse": {"name": "f", "response": response}}


def test_tool_message_may_name_its_function_when_the_call_is_not_in_history():
    messages = [user(), {"role": "tool", "tool_call_id": "gone", "name": "f", "content": "x"}]
    out = tr.to_gemini_request({"messages": messages})
    assert out["contents"][0]["parts"][1]["functionResponse"]["name"] == "f"


@pytest.mark.parametrize(
    ("choice", "config", "names"),
    [
        ("auto", {"mode": "AUTO"}, ["weather", "time"]),
        ("none", {"mode": "NONE"}, ["weather", "time"]),
        ("required", {"mode": "ANY"}, ["weather", "time"]),
        (
            {"type": "function", "function": {"name": "time"}},
            {"mode": "ANY", "allowedFunctionNames": ["time"]},
            ["weather", "time"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "weather"}}],
                },
            },
            {"mode": "ANY", "allowedFunctionNames": ["weather"]},
            ["weather", "time"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "weather"}}],
                },
            },
            {"mode": "AUTO"},
            ["weather"],
        ),
    ],
)
def test_tool_choice(choice, config, names):
    out = tr.to_gemini_request(request(tools=[WEATHER, TIME], tool_choice=choice))
    assert out["toolConfig"] == {"functionCallingConfig": config}
    assert [d["name"] for d in out["tools"][0]["functionDeclarations"]] == names


def test_tool_choice_without_tools():
    assert "toolConfig" not in tr.to_gemini_request(request(tool_choice="auto"))
    assert "toolConfig" not in tr.to_gemini_request(request(tool_choice="none"))
    with pytest.raises(InvalidRequest) as err:
        tr.to_gemini_request(request(tool_choice="required"))
    assert err.value.param == "tool_choice"


def test_json_modes():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    plain = tr.to_gemini_request(request(response_format={"type": "json_object"}))
    assert plain["generationConfig"] == {"responseMimeType": "application/json"}
    typed = tr.to_gemini_request(
        request(
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        )
    )
    assert typed["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    text = tr.to_gemini_request(request(response_format={"type": "text"}))
    assert "generationConfig" not in text


BAD_IMAGE = [{"type": "image_url", "image_url": {"url": "ftp://x.test/a.png"}}]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"tool_choice": "sometimes", "tools": [WEATHER]}, "tool_choice"),
        (
            {"tool_choice": {"type": "function", "function": {"name": "x"}}, "tools": [WEATHER]},
            "tool_choice",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"messages": [{"role": "system", "content": "only"}]}, "messages"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {}}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": [{"role": "user", "content": BAD_IMAGE}]}, "messages[0].content[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}
                ]
            },
            "messages[0].content[0].file",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {"messages": [user(), {"role": "tool", "tool_call_id": "nope", "content": "x"}]},
            "messages[1].tool_call_id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.name",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1,"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"type": "custom", "custom": {}}]}]},
            "messages[0].tool_calls[0].type",
        ),
    ],
)
def test_unservable_requests_are_400_naming_the_field(extra, param):
    body = {"model": "m", "messages": [user()], **extra}
    with pytest.raises(InvalidRequest) as err:
        tr.to_gemini_request(body)
    assert err.value.param == param and err.value.status_code == 400


def _signed(extra_content):
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    return {"messages": [{"role": "assistant", "tool_calls": [{**call, **extra_content}]}]}


def _allowed(tools):
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": tools}}
    return {"tools": [WEATHER], "tool_choice": choice}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        # Where OpenAI's schema is open (unknown fields; allowed tools are any objects), so
        # the gateway's validation passes them: once AttributeErrors, a 503.
        (_signed({"extra_content": 5}), "messages[0].tool_calls[0].extra_content"),
        (
            _signed({"extra_content": {"google": [1]}}),
            "messages[0].tool_calls[0].extra_content.google",
        ),
        (
            _signed({"extra_content": {"google": {"thought_signature": 5}}}),
            "messages[0].tool_calls[0].extra_content.google.thought_signature",
        ),
        (_allowed(["weather"]), "tool_choice.allowed_tools.tools[0]"),
        (_allowed([{"function": 5}]), "tool_choice.allowed_tools.tools[0].function"),
        (_allowed([{"type": "function"}]), "tool_choice.allowed_tools.tools[0].function.name"),
        (
            {
                "messages": [
                    user(),
                    {"role": "tool", "tool_call_id": "c", "name": 5, "content": "x"},
                ]
            },
            "messages[1].tool_call_id",
        ),
        # What the gateway's validation refuses, should it reach the translator another way.
        ({"messages": [5]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": 5}]}]},
            "messages[0].content[0].file",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": 5}]}]},
            "messages[0].tool_calls[0].function",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": 5}},
            "tool_choice.function",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": 5}},
            "response_format.json_schema",
        ),
    ],
)
def test_malformed_requests_are_400_naming_the_field(extra, param):
    body = {"model": "m", "messages": [user()], **extra}
    with pytest.raises(InvalidRequest) as err:
        tr.to_gemini_request(body)
    assert err.value.param == param and err.value.status_code == 400


def test_bad_data_url_is_400():
    bad = [{"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}]
    with pytest.raises(InvalidRequest):
        tr.to_gemini_request({"messages": [{"role": "user", "content": bad}]})


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.5-flash", "models/gemini-2.5-flash"),
        ("models/gemini-pro", "models/gemini-pro"),
        ("tunedModels/my-model-1", "tunedModels/my-model-1"),
        ("gemini-embedding-001", "models/gemini-embedding-001"),
    ],
)
def test_model_paths(model, path):
    assert tr.model_path(model) == path


@pytest.mark.parametrize(
    "model", ["", None, "../x", "a/b", "m:generateContent", "m?alt=x", "m#x", "m x", "-m", "a..b"]
)
def test_model_names_that_could_escape_the_path_are_400(model):
    with pytest.raises(InvalidRequest) as err:
        tr.model_path(model)
    assert err.value.param == "model"


# ----------------------------------------------------------------------------- responses


def response(parts, reason="STOP", **extra):
    return {
        "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": reason}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
        "responseId": "abc",
        **extra,
    }


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
        ("SOMETHING_NEW", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(reason, finish):
    out = tr.from_gemini_response(response([{"text": "hi"}], reason), "pub")
    assert out["choices"][0]["finish_reason"] == finish


def test_text_parts_join_and_shape_is_openai():
    out = tr.from_gemini_response(response([{"text": "Hel"}, {"text": "lo"}]), "pub")
    assert out["id"] == "chatcmpl-abc" and out["object"] == "chat.completion"
    assert out["model"] == "pub" and isinstance(out["created"], int)
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_function_calls_become_tool_calls():
    parts = [
        {"text": "thinking", "thought": True},
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "time"}},
    ]
    out = tr.from_gemini_response(response(parts), "pub")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"name": "weather", "arguments": '{"city":"Paris"}'},
        {"name": "time", "arguments": "{}"},
    ]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", c["id"]) for c in calls)
    assert len({c["id"] for c in calls}) == 2 and all(c["type"] == "function" for c in calls)


def test_text_with_calls_and_safety_wins_over_tool_calls():
    parts = [{"text": "Sure."}, {"functionCall": {"name": "f", "args": {}}}]
    out = tr.from_gemini_response(response(parts, "SAFETY"), "pub")
    assert out["choices"][0]["message"]["content"] == "Sure."
    assert out["choices"][0]["finish_reason"] == "content_filter"


def test_safety_stop_without_content():
    payload = {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": []}]}
    out = tr.from_gemini_response(payload, "pub")
    assert out["choices"][0]["message"] == {"role": "assistant", "content": ""}
    assert out["choices"][0]["finish_reason"] == "content_filter"
    assert "usage" not in out


def test_blocked_prompt_is_one_filtered_choice():
    payload = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    }
    out = tr.from_gemini_response(payload, "pub")
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": "content_filter",
        }
    ]
    assert out["usage"]["prompt_tokens"] == 9 and out["usage"]["completion_tokens"] == 0


@pytest.mark.parametrize("payload", [{}, {"candidates": []}, {"promptFeedback": {}}])
def test_response_with_nothing_is_an_error(payload):
    with pytest.raises(ValueError):
        tr.from_gemini_response(payload, "pub")


def test_candidates_become_choices_in_index_order():
    payload = {
        "candidates": [
            {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1},
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},  # index 0 omitted
        ]
    }
    out = tr.from_gemini_response(payload, "pub")
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]


def test_snake_case_responses_are_read_too():
    payload = {
        "candidates": [
            {
                "content": {"parts": [{"function_call": {"name": "f", "args": {"x": 1}}}]},
                "finish_reason": "STOP",
            }
        ],
        "usage_metadata": {
            "prompt_token_count": 10,
            "candidates_token_count": 4,
            "thoughts_token_count": 3,
            "cached_content_token_count": 6,
            "total_token_count": 17,
        },
        "response_id": "r1",
    }
    out = tr.from_gemini_response(payload, "pub")
    assert out["id"] == "chatcmpl-r1"
    assert out["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"
    assert out["usage"]["prompt_tokens"] == 10 and out["usage"]["completion_tokens"] == 7
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 6
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    blocked = tr.from_gemini_response({"prompt_feedback": {"block_reason": "OTHER"}}, "pub")
    assert blocked["choices"][0]["finish_reason"] == "content_filter"


def test_usage_counts_thinking_as_completion_and_tool_use_as_prompt():
    usage = tr.openai_usage(
        {
            "promptTokenCount": 100,
            "toolUsePromptTokenCount": 20,
            "cachedContentTokenCount": 60,
            "candidatesTokenCount": 30,
            "thoughtsTokenCount": 50,
            "totalTokenCount": 200,
        }
    )
    assert usage == {
        "prompt_tokens": 120,
        "completion_tokens": 80,
        "total_tokens": 200,
        "prompt_tokens_details": {"cached_tokens": 60},
        "completion_tokens_details": {"reasoning_tokens": 50},
    }
    assert tr.openai_usage({"promptTokenCount": 4, "candidatesTokenCount": 1})["total_tokens"] == 5


def test_thought_signatures_ride_in_the_tool_call_id_and_come_back():
    signature = "++//c2lnbmVkLWJ5LWdlbWluaQE="
    parts = [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": signature}]
    call = tr.from_gemini_response(response(parts), "pub")["choices"][0]["message"]["tool_calls"][0]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", call["id"])
    messages = [user(), {"role": "assistant", "tool_calls": [call]}]
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": "ok"})
    out = tr.to_gemini_request({"messages": messages})
    assert out["contents"][1]["parts"][0]["thoughtSignature"] == signature
    assert out["contents"][2]["parts"][0]["functionResponse"]["name"] == "f"
    # Google's OpenAI-compatible shape for the same thing is read too
    google = {**call, "id": "call_x", "extra_content": {"google": {"thought_signature": "c2ln"}}}
    out = tr.to_gemini_request(
        {"messages": [user(), {"role": "assistant", "tool_calls": [google]}]}
    )
    assert out["contents"][1]["parts"][0]["thoughtSignature"] == "c2ln"
    assert tr.split_call_id("call_plain") == ("call_plain", None)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_any_signature_survives_the_id(raw):
    signature = base64.b64encode(raw).decode()
    call_id = tr.new_call_id(signature)
    assert re.fullmatch(r"call_[0-9a-f]{24}__sig__[A-Za-z0-9_-]+", call_id)
    assert tr.split_call_id(call_id) == (call_id.split("__sig__")[0], signature)


# ----------------------------------------------------------------------------- streams


def chunk(*candidates, usage=None, **extra):
    out = {"candidates": list(candidates), "responseId": "r9", **extra}
    if usage:
        out["usageMetadata"] = usage
    return out


def text(t, index=0, reason=None):
    c = {"content": {"parts": [{"text": t}], "role": "model"}, "index": index}
    if reason:
        c["finishReason"] = reason
    return c


def test_stream_text_then_finish_then_usage():
    t = tr.GeminiStreamToOpenAI("pub")
    assert t.usage_chunk() is None and not t.finished
    out = t.feed(chunk(text("Hel"), usage={"promptTokenCount": 4, "totalTokenCount": 4}))
    out += t.feed(chunk(text("lo")))
    assert not t.finished
    out += t.feed(
        chunk(text("!", reason="STOP"), usage={"promptTokenCount": 4, "candidatesTokenCount": 3})
    )
    deltas = [c["choices"][0]["delta"] for c in out]
    assert deltas == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {"content": "!"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in out] == [None, None, None, "stop"]
    assert {c["id"] for c in out} == {"chatcmpl-r9"} and {c["model"] for c in out} == {"pub"}
    assert all(c["object"] == "chat.completion.chunk" for c in out)
    assert t.finished
    last = t.usage_chunk()
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3
    assert last["usage"]["prompt_tokens"] == 4 and last["id"] == "chatcmpl-r9"


def test_stream_function_calls_get_running_indexes():
    t = tr.GeminiStreamToOpenAI("pub")
    call = {"content": {"parts": [{"functionCall": {"name": "a", "args": {"x": 1}}}]}}
    both = {
        "content": {
            "parts": [{"functionCall": {"name": "b"}}, {"functionCall": {"name": "c", "args": {}}}]
        },
        "finishReason": "STOP",
    }
    out = t.feed(chunk(call)) + t.feed(chunk(both))
    first, second, finish = out
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert "content" not in first["choices"][0]["delta"]
    calls = first["choices"][0]["delta"]["tool_calls"] + second["choices"][0]["delta"]["tool_calls"]
    assert [(c["index"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        (0, "a", '{"x":1}'),
        (1, "b", "{}"),
        (2, "c", "{}"),
    ]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert finish["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_safety_stop_and_thoughts():
    t = tr.GeminiStreamToOpenAI("pub")
    thought = {"content": {"parts": [{"text": "hmm", "thought": True}]}, "index": 0}
    out = (
        t.feed(chunk(thought))
        + t.feed(chunk(text("a")))
        + t.feed(chunk({"finishReason": "SAFETY"}))
    )
    assert [c["choices"][0]["delta"] for c in out] == [
        {"role": "assistant", "content": ""},
        {"content": "a"},
        {},
    ]
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter" and t.finished


def test_stream_blocked_prompt():
    t = tr.GeminiStreamToOpenAI("pub")
    out = t.feed(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}
    )
    assert [c["choices"][0]["delta"] for c in out] == [{"role": "assistant", "content": ""}, {}]
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert t.finished and t.usage_chunk()["usage"]["prompt_tokens"] == 5
    assert t.feed({"promptFeedback": {"blockReason": "SAFETY"}}) == []


def test_stream_several_candidates_each_must_finish():
    t = tr.GeminiStreamToOpenAI("pub")
    out = t.feed(chunk(text("a", 0), text("b", 1)))
    out += t.feed(chunk(text("c", 0, "STOP")))
    assert not t.finished  # candidate 1 is still open
    out += t.feed(chunk(text("d", 1, "MAX_TOKENS")))
    assert t.finished
    by_index: dict[int, list] = {}
    for c in out:
        choice = c["choices"][0]
        by_index.setdefault(choice["index"], []).append(choice)
    assert [ch["delta"] for ch in by_index[1]] == [
        {"role": "assistant", "content": "b"},
        {"content": "d"},
        {},
    ]
    assert (
        by_index[0][-1]["finish_reason"] == "stop" and by_index[1][-1]["finish_reason"] == "length"
    )


def test_stream_chunks_without_candidates_are_skipped():
    t = tr.GeminiStreamToOpenAI("pub")
    assert t.feed({"usageMetadata": {"promptTokenCount": 1}}) == []
    assert t.feed({"candidates": [{"index": 0}]})[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
    }
    assert t.id.startswith("chatcmpl-")


# ----------------------------------------------------------------------------- embeddings


def test_embed_request_is_a_batch_of_one_request_per_input():
    out = tr.to_gemini_embed_request(
        {"input": ["a", "b"], "dimensions": 64}, "gemini-embedding-001"
    )
    assert out == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 64,
            }
            for t in ("a", "b")
        ]
    }
    single = tr.to_gemini_embed_request({"input": "x", "encoding_format": "float"}, "e")
    assert single == {"requests": [{"model": "models/e", "content": {"parts": [{"text": "x"}]}}]}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": [1, 2, 3]}, "input", "unsupported_parameter"),
        ({"input": [[1, 2], [3]]}, "input", "unsupported_parameter"),
        ({"input": []}, "input", None),
        ({"input": None}, "input", None),
        ({"input": ["a", 1]}, "input", None),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", None),
    ],
)
def test_bad_embed_requests(body, param, code):
    with pytest.raises(InvalidRequest) as err:
        tr.to_gemini_embed_request(body, "e")
    assert err.value.param == param and err.value.code == code


def test_embed_response_float_and_base64():
    payload = {"embeddings": [{"values": [0.5, -0.25]}, {"values": [1.0, 0.0]}]}
    out = tr.from_gemini_embed_response(payload, "pub")
    assert out == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -0.25]},
            {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]},
        ],
        "model": "pub",
    }
    packed = tr.from_gemini_embed_response(payload, "pub", "base64")["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(packed)) == (0.5, -0.25)
    one = tr.from_gemini_embed_response(
        {"embedding": {"values": [0.1]}, "usageMetadata": {"promptTokenCount": 3}}, "pub"
    )
    assert one["data"][0]["embedding"] == [0.1]
    assert one["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


@pytest.mark.parametrize("payload", [{}, {"embeddings": []}, {"embeddings": "x"}])
def test_embed_response_without_vectors_is_an_error(payload):
    with pytest.raises(ValueError):
        tr.from_gemini_embed_response(payload, "pub")


# ----------------------------------------------------------------------------- properties

words = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20
)
tool_call = st.builds(
    lambda i, name, args: {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(args).decode()},
    },
    st.integers(0, 99),
    st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
    st.dictionaries(
        st.from_regex(r"[a-z]{1,5}", fullmatch=True),
        st.integers(-(2**53), 2**53) | st.text(max_size=5) | st.booleans(),
        max_size=3,
    ),
)


@st.composite
def conversations(draw):
    messages = [{"role": "system", "content": draw(words)}] if draw(st.booleans()) else []
    for turn in range(draw(st.integers(1, 4))):
        messages.append(user(draw(words)))
        calls = draw(st.lists(tool_call, max_size=3, unique_by=lambda c: c["id"]))
        calls = [{**c, "id": f"{c['id']}_{turn}"} for c in calls]  # unique in the conversation
        content = draw(st.none() | words) if calls else draw(words)
        messages.append(
            {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
        )
        messages += [
            {"role": "tool", "tool_call_id": c["id"], "content": draw(words)} for c in calls
        ]
    return {"model": "m", "messages": messages}


def calls_of(message):
    return [
        (c["function"]["name"], orjson.loads(c["function"]["arguments"]))
        for c in message.get("tool_calls") or ()
    ]


def expected_response(content):
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) and content.startswith("{") else {"output": content}


@settings(max_examples=200, deadline=None)
@given(conversations())
def test_conversation_survives_gemini(body):
    """OpenAI conversation → Gemini request; each model turn read back as a Gemini answer
    gives the assistant message again; user text and tool results keep their order and
    the names of the calls they answer."""
    out = tr.to_gemini_request(body)
    contents = out["contents"]
    assert [c["role"] for c in contents] == ["user", "model"] * (len(contents) // 2) + ["user"] * (
        len(contents) % 2
    )
    system = [m["content"] for m in body["messages"] if m["role"] == "system"]
    assert [p["text"] for p in out.get("systemInstruction", {}).get("parts", [])] == system
    assistants = [m for m in body["messages"] if m["role"] == "assistant"]
    turns = [c for c in contents if c["role"] == "model"]
    assert len(turns) == len(assistants)
    for message, turn in zip(assistants, turns, strict=True):
        back = tr.from_gemini_response(
            {"candidates": [{"content": turn, "finishReason": "STOP"}]}, "pub"
        )["choices"][0]
        assert back["message"]["content"] == (
            message["content"]
            if message["content"]
            else (None if message.get("tool_calls") else "")
        )
        assert calls_of(back["message"]) == calls_of(message)
        assert back["finish_reason"] == ("tool_calls" if message.get("tool_calls") else "stop")
    names = {c["id"]: c["function"]["name"] for m in assistants for c in m.get("tool_calls") or ()}
    expected = []
    for m in body["messages"]:
        if m["role"] == "user":
            expected.append({"text": m["content"]})
        elif m["role"] == "tool":
            response = expected_response(m["content"])
            expected.append(
                {"functionResponse": {"name": names[m["tool_call_id"]], "response": response}}
            )
    assert [p for c in contents if c["role"] == "user" for p in c["parts"]] == expected


@st.composite
def answers(draw):
    """A Gemini candidate's parts, and the same parts cut into stream chunks."""
    part = st.one_of(
        st.builds(lambda t: {"text": t}, words),
        st.builds(
            lambda name, args: {"functionCall": {"name": name, "args": args}},
            st.from_regex(r"[a-z]{1,8}", fullmatch=True),
            st.dictionaries(
                st.from_regex(r"[a-z]{1,4}", fullmatch=True),
                st.integers(-(2**53), 2**53),
                max_size=2,
            ),
        ),
        st.builds(lambda t: {"text": t, "thought": True}, words),
    )
    parts = draw(st.lists(part, min_size=1, max_size=8))
    cuts = sorted(draw(st.sets(st.integers(1, len(parts)), max_size=len(parts))) | {len(parts)})
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(parts[start:cut])
        start = cut
    reason = draw(st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "OTHER"]))
    return parts, pieces, reason


@settings(max_examples=200, deadline=None)
@given(answers())
def test_stream_and_whole_answer_agree(case):
    parts, pieces, reason = case
    whole = tr.from_gemini_response(
        {"candidates": [{"content": {"parts": parts}, "finishReason": reason}]}, "pub"
    )["choices"][0]
    t = tr.GeminiStreamToOpenAI("pub")
    chunks = []
    for k, piece in enumerate(pieces):
        candidate = {"content": {"parts": piece, "role": "model"}}
        if k == len(pieces) - 1:
            candidate["finishReason"] = reason
        chunks += t.feed({"candidates": [candidate]})
    assert t.finished
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == (whole["message"]["content"] or "")
    streamed_calls = [c for d in deltas for c in d.get("tool_calls") or ()]
    assert [c["index"] for c in streamed_calls] == list(range(len(streamed_calls)))
    assert [c["function"] for c in streamed_calls] == [
        c["function"] for c in whole["message"].get("tool_calls") or ()
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]
