"""The Ollama translator: requests, answers, NDJSON streams, embeddings, property tests."""

from __future__ import annotations

import base64
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forge.errors import InvalidRequest
from forge.translate import ollama as tr

B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
PNG = "data:image/png;base64," + B64
JPEG = "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ=="


def chat(**extra):
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


# ----------------------------------------------------------------------------- chat requests


def test_chat_request_maps_roles_images_tools_and_options():
    body = {
        "model": "public",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is "},
                    {"type": "image_url", "image_url": {"url": PNG}},
                    {"type": "text", "text": "this?"},
                    {"type": "image_url", "image_url": {"url": JPEG, "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
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
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "9"}]},
            {"role": "assistant", "content": "Sunny at nine."},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "strict": True,
                },
            },
            {"type": "function", "function": {"name": "time"}},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "stop": "END",
        "temperature": 0.2,
        "top_p": 0.5,
        "seed": 7,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "max_tokens": 50,
        "max_completion_tokens": 99,
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out = tr.to_ollama_chat(body, "llama3.2", stream=True)
    assert out["model"] == "llama3.2" and out["stream"] is True
    system, developer, user, assistant, r1, r2, final = out["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert developer == {"role": "system", "content": "Use metric."}
    assert user == {
        "role": "user",
        "content": "What is this?",
        "images": [B64, "/9j/4AAQSkZJRgABAQ=="],
    }
    assert assistant == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "function": {"name": "weather", "arguments": {"city": "Paris"}}},
            {"id": "call_2", "function": {"name": "time", "arguments": {}}},
        ],
    }
    assert r1 == {
        "role": "tool",
        "content": "sunny",
        "tool_call_id": "call_1",
        "tool_name": "weather",
    }
    assert r2 == {"role": "tool", "content": "9", "tool_call_id": "call_2", "tool_name": "time"}
    assert final == {"role": "assistant", "content": "Sunny at nine."}
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "description": "Weather",
            },
        },
        {
            "type": "function",
            "function": {"name": "time", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    assert out["options"] == {
        "temperature": 0.2,
        "top_p": 0.5,
        "seed": 7,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "stop": ["END"],
        "num_predict": 99,
    }
    assert "format" not in out and "think" not in out


def test_chat_request_minimal_sends_stream_false_and_no_options():
    out = tr.to_ollama_chat(chat(), "m", stream=False)
    assert out == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_chat_request_max_tokens_and_stop_list():
    out = tr.to_ollama_chat(chat(max_tokens=12, stop=["a", "b"], temperature=0), "m", False)
    assert out["options"] == {"temperature": 0, "stop": ["a", "b"], "num_predict": 12}


def test_tool_result_without_a_known_call_has_no_tool_name():
    body = chat()
    body["messages"].append({"role": "tool", "tool_call_id": "call_unknown", "content": "x"})
    body["messages"].append({"role": "tool", "content": "y"})
    out = tr.to_ollama_chat(body, "m", False)
    assert out["messages"][1] == {"role": "tool", "content": "x", "tool_call_id": "call_unknown"}
    assert out["messages"][2] == {"role": "tool", "content": "y"}


def test_tool_name_comes_from_the_latest_call_with_that_id():
    call = {"id": "c", "type": "function", "function": {"name": "first", "arguments": "{}"}}
    again = {"id": "c", "type": "function", "function": {"name": "second", "arguments": "{}"}}
    body = chat()
    body["messages"] += [
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "1"},
        {"role": "assistant", "tool_calls": [again]},
        {"role": "tool", "tool_call_id": "c", "content": "2"},
    ]
    out = tr.to_ollama_chat(body, "m", False)
    assert [m.get("tool_name") for m in out["messages"] if m["role"] == "tool"] == [
        "first",
        "second",
    ]


@pytest.mark.parametrize(("choice", "sent"), [(None, True), ("auto", True), ("none", False)])
def test_tool_choice_auto_keeps_tools_and_none_withholds_them(choice, sent):
    tools = [{"type": "function", "function": {"name": "f"}}]
    extra = {"tools": tools} if choice is None else {"tools": tools, "tool_choice": choice}
    out = tr.to_ollama_chat(chat(**extra), "m", False)
    assert ("tools" in out) is sent


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            {"type": "object"},
        ),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "json"),
        ({"type": "text"}, None),
        (None, None),
    ],
)
def test_response_format_becomes_format(response_format, expected):
    out = tr.to_ollama_chat(chat(response_format=response_format), "m", False)
    assert out.get("format") == expected


@pytest.mark.parametrize(
    ("effort", "think"), [("none", False), ("minimal", False), ("low", "low"), ("high", "high")]
)
def test_reasoning_effort_becomes_think(effort, think):
    assert tr.to_ollama_chat(chat(reasoning_effort=effort), "m", False)["think"] == think


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"audio": {"voice": "x"}}, "audio"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"response_format": {"type": "grammar"}}, "response_format.type"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": ["hi"]}, "messages[0]"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "x"}}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look"},
                            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_unservable_requests_are_400_naming_the_field(extra, param):
    with pytest.raises(InvalidRequest) as err:
        tr.to_ollama_chat(chat(**extra), "m", False)
    assert err.value.param == param and err.value.status_code == 400


CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def _assistant(*calls):
    return {"messages": [{"role": "assistant", "content": "x", "tool_calls": list(calls)}]}


MALFORMED = [
    # OpenAI's schema takes custom tool calls, which have no counterpart here.
    (
        _assistant({"id": "c", "type": "custom", "custom": {"name": "f", "input": "x"}}),
        "messages[0].tool_calls[0].type",
    ),
    # What the gateway's validation refuses, should it reach the translator another way:
    # once AttributeErrors and TypeErrors, so a 503 and a fallback.
    (_assistant(5), "messages[0].tool_calls[0]"),
    (_assistant({**CALL, "function": 5}), "messages[0].tool_calls[0].function"),
    (
        _assistant({**CALL, "function": {"arguments": "{}"}}),
        "messages[0].tool_calls[0].function.name",
    ),
    ({"tools": [{"type": "function", "function": 5}]}, "tools[0].function"),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]},
        "tools[0].function.parameters",
    ),
    (
        {"response_format": {"type": "json_schema", "json_schema": 5}},
        "response_format.json_schema",
    ),
    ({"messages": [5]}, "messages[0]"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
]


@pytest.mark.parametrize(("extra", "param"), MALFORMED)
def test_malformed_requests_are_400_naming_the_field(extra, param):
    with pytest.raises(InvalidRequest) as err:
        tr.to_ollama_chat(chat(**extra), "m", False)
    assert err.value.param == param and err.value.status_code == 400


def test_http_image_urls_say_ollama_needs_base64():
    msg = {"role": "user", "content": [{"type": "image_url", "image_url": "http://x.test/a.png"}]}
    with pytest.raises(InvalidRequest) as err:
        tr.to_ollama_chat({"model": "m", "messages": [msg]}, "m", False)
    assert "base64" in err.value.message and err.value.code == "unsupported_parameter"


def test_bad_image_data_and_tool_arguments_are_400():
    bad_image = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}],
    }
    with pytest.raises(InvalidRequest):
        tr.to_ollama_chat({"model": "m", "messages": [bad_image]}, "m", False)
    bad_args = {
        "role": "assistant",
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1,"}}],
    }
    with pytest.raises(InvalidRequest) as err:
        tr.to_ollama_chat({"model": "m", "messages": [bad_args]}, "m", False)
    assert err.value.param == "messages[0].tool_calls[0].function.arguments"


# ----------------------------------------------------------------------------- chat answers


def ollama_answer(message, **extra):
    return {
        "model": "llama3.2",
        "created_at": "2025-06-01T10:00:00.123456789Z",
        "message": {"role": "assistant", **message},
        "done": True,
        "done_reason": "stop",
        "total_duration": 5,
        "prompt_eval_count": 26,
        "eval_count": 298,
        **extra,
    }


def test_chat_answer_text_and_usage():
    out = tr.from_ollama_chat(ollama_answer({"content": "Hello!"}), "pub")
    assert out["object"] == "chat.completion" and out["model"] == "pub"
    assert out["id"].startswith("chatcmpl-") and isinstance(out["created"], int)
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {"prompt_tokens": 26, "completion_tokens": 298, "total_tokens": 324}


def test_chat_answer_tool_calls_get_ids_and_json_string_arguments():
    calls = [
        {"function": {"name": "weather", "arguments": {"city": "Paris", "days": 2}}},
        {"id": "call_upstream", "function": {"index": 1, "name": "time", "arguments": {}}},
    ]
    out = tr.from_ollama_chat(ollama_answer({"content": "", "tool_calls": calls}), "pub")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    first, second = choice["message"]["tool_calls"]
    assert first["id"].startswith("call_") and first["type"] == "function"
    assert orjson.loads(first["function"]["arguments"]) == {"city": "Paris", "days": 2}
    assert second == {
        "id": "call_upstream",
        "type": "function",
        "function": {"name": "time", "arguments": "{}"},
    }


def test_tool_call_ids_are_unique():
    calls = [{"function": {"name": "f", "arguments": {}}}] * 5
    out = tr.from_ollama_chat(ollama_answer({"content": "", "tool_calls": calls}), "pub")
    ids = [c["id"] for c in out["choices"][0]["message"]["tool_calls"]]
    assert len(set(ids)) == 5


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("stop", "stop"), ("length", "length"), ("load", "stop"), ("unload", "stop"), (None, "stop")],
)
def test_chat_answer_finish_reasons(reason, finish):
    out = tr.from_ollama_chat(ollama_answer({"content": "x"}, done_reason=reason), "pub")
    assert out["choices"][0]["finish_reason"] == finish


def test_chat_answer_without_counts_and_with_thinking():
    payload = ollama_answer({"content": "4", "thinking": "2+2..."})
    del payload["prompt_eval_count"], payload["eval_count"]
    out = tr.from_ollama_chat(payload, "pub")
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "4"}
    assert out["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_chat_answer_without_message_is_an_error():
    with pytest.raises(KeyError):
        tr.from_ollama_chat({"done": True}, "pub")


# ----------------------------------------------------------------------------- chat streams


def line(content="", done=False, **extra):
    out = {
        "model": "llama3.2",
        "created_at": "2025-06-01T10:00:00Z",
        "message": {"role": "assistant", "content": content, **extra.pop("message", {})},
        "done": done,
    }
    return {**out, **extra}


def test_chat_stream_becomes_openai_chunks():
    t = tr.OllamaChatStreamToOpenAI("pub")
    lines = [
        line(message={"thinking": "hmm"}),
        line("Hel"),
        line(message={"thinking": "more"}),
        line("lo"),
        line(message={"tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}),
        line(
            message={
                "tool_calls": [
                    {"id": "call_x", "function": {"name": "g", "arguments": {}}},
                    {"function": {"name": "h", "arguments": {"b": [1]}}},
                ]
            }
        ),
        line(done=True, done_reason="stop", prompt_eval_count=10, eval_count=4),
    ]
    chunks = [c for ln in lines for c in t.feed(ln)]
    assert {c["id"] for c in chunks} == {t.id} and {c["model"] for c in chunks} == {"pub"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Hel"} and deltas[2] == {"content": "lo"}
    calls = [call for d in deltas for call in d.get("tool_calls", ())]
    assert [c["index"] for c in calls] == [0, 1, 2]
    assert [c["function"]["name"] for c in calls] == ["f", "g", "h"]
    assert calls[1]["id"] == "call_x" and calls[0]["id"].startswith("call_")
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [{"a": 1}, {}, {"b": [1]}]
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert t.finished
    usage = t.usage_chunk()
    assert usage["choices"] == [] and usage["id"] == t.id
    assert usage["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def test_chat_stream_first_line_carries_role_and_content_and_length_finish():
    t = tr.OllamaChatStreamToOpenAI("pub")
    first = t.feed(line("Hi"))
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}
    end = t.feed(line(" there", done=True, done_reason="length", eval_count=2))
    assert [c["choices"][0]["delta"] for c in end] == [{"content": " there"}, {}]
    assert end[-1]["choices"][0]["finish_reason"] == "length"
    assert t.usage_chunk()["usage"]["prompt_tokens"] == 0


def test_chat_stream_error_line_raises():
    t = tr.OllamaChatStreamToOpenAI("pub")
    t.feed(line("a"))
    with pytest.raises(ValueError, match="unexpected EOF"):
        t.feed({"error": "unexpected EOF"})
    with pytest.raises(ValueError, match="boom"):
        t.feed({"error": {"message": "boom"}})


# ----------------------------------------------------------------------------- completions


def test_generate_request_and_answer():
    body = {
        "model": "m",
        "prompt": ["Once upon"],
        "suffix": "The end.",
        "max_tokens": 5,
        "stop": "\n",
        "temperature": 0.5,
    }
    out = tr.to_ollama_generate(body, "llama3.2", stream=True)
    assert out == {
        "model": "llama3.2",
        "prompt": "Once upon",
        "stream": True,
        "suffix": "The end.",
        "options": {"temperature": 0.5, "stop": ["\n"], "num_predict": 5},
    }
    answer = {
        "model": "llama3.2",
        "response": " a time",
        "done": True,
        "done_reason": "length",
        "context": [1, 2],
        "prompt_eval_count": 3,
        "eval_count": 2,
    }
    reply = tr.from_ollama_generate(answer, "pub")
    assert reply["object"] == "text_completion" and reply["id"].startswith("cmpl-")
    assert reply["choices"] == [
        {"index": 0, "text": " a time", "logprobs": None, "finish_reason": "length"}
    ]
    assert reply["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [[1, 2]]}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"n": 3}, "n"),
        ({"best_of": 2}, "best_of"),
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),
    ],
)
def test_unservable_completions_are_400(extra, param):
    with pytest.raises(InvalidRequest) as err:
        tr.to_ollama_generate({"model": "m", "prompt": "x", **extra}, "m", False)
    assert err.value.param == param


def test_generate_stream_becomes_text_completion_chunks():
    t = tr.OllamaGenerateStreamToOpenAI("pub")
    lines = [
        {"model": "m", "response": "", "done": False},
        {"model": "m", "response": "Once", "done": False},
        {"model": "m", "response": " upon", "done": False},
        {"model": "m", "response": "", "done": True, "done_reason": "stop", "eval_count": 2},
    ]
    chunks = [c for ln in lines for c in t.feed(ln)]
    assert [c["choices"][0]["text"] for c in chunks] == ["Once", " upon", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "text_completion" for c in chunks)
    assert t.finished and t.usage_chunk()["usage"]["completion_tokens"] == 2
    assert t.usage_chunk()["object"] == "text_completion"


# ----------------------------------------------------------------------------- embeddings


def test_embed_request():
    assert tr.to_ollama_embed({"model": "e", "input": "hi"}, "nomic") == {
        "model": "nomic",
        "input": "hi",
        "truncate": False,
    }
    out = tr.to_ollama_embed(
        {"model": "e", "input": ["a", "b"], "dimensions": 4, "encoding_format": "base64"}, "n"
    )
    assert out == {"model": "n", "input": ["a", "b"], "truncate": False, "dimensions": 4}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"input": [1, 2]}, "input"),
        ({"input": [[1, 2]]}, "input"),
        ({"input": None}, "input"),
        ({"encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_unservable_embeddings_are_400(extra, param):
    with pytest.raises(InvalidRequest) as err:
        tr.to_ollama_embed({"model": "e", "input": "x", **extra}, "e")
    assert err.value.param == param


def test_embed_answer_float_and_base64():
    payload = {
        "model": "nomic",
        "embeddings": [[0.5, -0.25, 1.0], [0.0, 0.125, -2.0]],
        "prompt_eval_count": 7,
    }
    floats = tr.from_ollama_embed(payload, "pub")
    assert floats == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 1.0]},
            {"object": "embedding", "index": 1, "embedding": [0.0, 0.125, -2.0]},
        ],
        "model": "pub",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    encoded = tr.from_ollama_embed(payload, "pub", "base64")
    raw = base64.b64decode(encoded["data"][1]["embedding"])
    assert raw == struct.pack("<3f", 0.0, 0.125, -2.0)
    assert list(struct.unpack("<3f", raw)) == [0.0, 0.125, -2.0]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=64))
def test_base64_embeddings_decode_to_the_same_float32s(vector):
    raw = base64.b64decode(tr.base64_floats(vector))
    assert list(struct.unpack(f"<{len(vector)}f", raw)) == vector


# ----------------------------------------------------------------------------- properties

text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20
)
arguments = st.dictionaries(
    st.from_regex(r"[a-z]{1,5}", fullmatch=True),
    st.one_of(st.integers(-(2**53), 2**53), text, st.booleans(), st.none()),
    max_size=3,
)
tool_call = st.builds(
    lambda i, name, args: {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(args).decode()},
    },
    st.integers(0, 99),
    st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
    arguments,
)
image = st.sampled_from([PNG, JPEG]).map(lambda u: {"type": "image_url", "image_url": {"url": u}})
user_content = st.one_of(
    text,
    st.lists(st.one_of(text.map(lambda t: {"type": "text", "text": t}), image), min_size=1),
)


@st.composite
def conversations(draw):
    messages = [{"role": draw(st.sampled_from(["system", "developer"])), "content": draw(text)}]
    if draw(st.booleans()):
        messages = []
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(user_content)})
        calls = draw(st.lists(tool_call, max_size=2, unique_by=lambda c: c["id"]))
        if calls:
            content = draw(st.one_of(st.none(), text))
            messages.append({"role": "assistant", "content": content, "tool_calls": calls})
            messages += [
                {"role": "tool", "tool_call_id": c["id"], "content": draw(text)} for c in calls
            ]
        else:
            messages.append({"role": "assistant", "content": draw(text)})
    body = {"model": "m", "messages": messages}
    for field, strategy in (
        ("temperature", st.floats(0, 2)),
        ("top_p", st.floats(0, 1)),
        ("seed", st.integers(0, 2**31)),
        ("max_tokens", st.integers(1, 4096)),
        ("stop", st.lists(text, min_size=1, max_size=4)),
    ):
        if draw(st.booleans()):
            body[field] = draw(strategy)
    return body


def normalise_openai(messages):
    """What must survive: role (developer is a system role), text, images, tool calls with
    parsed arguments, and which call a tool result answers, by name."""
    names = {}
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            text_ = "".join(p["text"] for p in content if p["type"] == "text")
            images = [
                p["image_url"]["url"].split(",", 1)[1] for p in content if p["type"] != "text"
            ]
        else:
            text_, images = content or "", []
        calls = []
        for c in m.get("tool_calls") or ():
            names[c["id"]] = c["function"]["name"]
            calls.append((c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])))
        role = "system" if m["role"] == "developer" else m["role"]
        answered = names.get(m["tool_call_id"]) if m["role"] == "tool" else None
        out.append((role, text_, images, calls, answered))
    return out


def normalise_ollama(messages):
    return [
        (
            m["role"],
            m["content"],
            m.get("images", []),
            [
                (c["id"], c["function"]["name"], c["function"]["arguments"])
                for c in m.get("tool_calls", ())
            ],
            m.get("tool_name"),
        )
        for m in messages
    ]


@settings(max_examples=200, deadline=None)
@given(conversations(), st.booleans())
def test_conversation_survives_translation_to_ollama(body, stream):
    out = tr.to_ollama_chat(body, "llama3.2", stream)
    assert normalise_ollama(out["messages"]) == normalise_openai(body["messages"])
    assert out["stream"] is stream and out["model"] == "llama3.2"
    options = out.get("options", {})
    for field in ("temperature", "top_p", "seed"):
        assert options.get(field) == body.get(field)
    assert options.get("num_predict") == body.get("max_tokens")
    assert options.get("stop") == body.get("stop")
    orjson.dumps(out)  # plain JSON all the way down


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(st.just(""), text),
    st.lists(st.tuples(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), arguments), max_size=3),
    st.sampled_from(["stop", "length", "load", None]),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
)
def test_answer_fields_survive_translation_to_openai(content, calls, reason, prompt, completion):
    message = {"content": content}
    if calls:
        message["tool_calls"] = [{"function": {"name": n, "arguments": a}} for n, a in calls]
    payload = ollama_answer(
        message, done_reason=reason, prompt_eval_count=prompt, eval_count=completion
    )
    choice = tr.from_ollama_chat(payload, "pub")["choices"][0]
    out_calls = choice["message"].get("tool_calls", [])
    assert [
        (c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in out_calls
    ] == calls
    assert (choice["message"]["content"] or "") == content
    expected = "tool_calls" if calls else ("length" if reason == "length" else "stop")
    assert choice["finish_reason"] == expected
    usage = tr.from_ollama_chat(payload, "pub")["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, completion)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(text, max_size=20),
    st.lists(st.integers(0, 19), max_size=5),
    st.integers(0, 1000),
    st.integers(0, 1000),
)
def test_stream_pieces_survive_translation(pieces, thinking_at, prompt, completion):
    t = tr.OllamaChatStreamToOpenAI("pub")
    chunks = []
    for i, piece in enumerate(pieces):
        if i in thinking_at:
            chunks += t.feed(line(message={"thinking": "..."}))
        chunks += t.feed(line(piece))
    chunks += t.feed(line(done=True, prompt_eval_count=prompt, eval_count=completion))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content", "") for d in deltas) == "".join(pieces)
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert t.usage_chunk()["usage"]["total_tokens"] == prompt + completion
