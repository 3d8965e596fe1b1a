"""The Anthropic translator, both directions, including property tests for round trips."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forge.errors import InvalidRequest
from forge.translate import anthropic as tr
from tests.fakes.anthropic_upstream import refusal

PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"


def test_request_maps_system_images_tools_and_sampling():
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
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
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "time", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Weather",
                    "parameters": {"type": "object"},
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": False,
        "stop": "END",
        "temperature": 1.7,
        "top_p": 0.5,
        "max_completion_tokens": 99,
        "user": "u-1",
        "stream": True,
    }
    out = tr.to_anthropic_request(body, "claude-x")
    assert out["model"] == "claude-x" and out["max_tokens"] == 99 and out["stream"] is True
    assert out["system"] == "Be brief.\n\nUse metric."
    assert out["stop_sequences"] == ["END"] and out["temperature"] == 1.0 and out["top_p"] == 0.5
    assert out["metadata"] == {"user_id": "u-1"}
    user, assistant, results = out["messages"]
    assert user["content"][1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": PNG.split(",", 1)[1],
    }
    assert user["content"][2]["source"] == {"type": "url", "url": "https://x.test/cat.jpg"}
    assert [b["input"] for b in assistant["content"]] == [{"city": "Paris"}, {}]
    assert results["role"] == "user"
    assert [b["tool_use_id"] for b in results["content"]] == ["call_1", "call_2"]
    assert out["tools"] == [
        {"name": "weather", "description": "Weather", "input_schema": {"type": "object"}}
    ]
    assert out["tool_choice"] == {
        "type": "tool",
        "name": "weather",
        "disable_parallel_tool_use": True,
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ],
)
def test_unservable_requests_are_400_naming_the_field(extra, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(InvalidRequest) as err:
        tr.to_anthropic_request(body, "m")
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
    ({"tool_choice": {"type": "function", "function": 5}}, "tool_choice.function"),
    ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
]


@pytest.mark.parametrize(("extra", "param"), MALFORMED)
def test_malformed_requests_are_400_naming_the_field(extra, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(InvalidRequest) as err:
        tr.to_anthropic_request(body, "m")
    assert err.value.param == param and err.value.status_code == 400


def test_bad_image_and_tool_arguments_are_400():
    bad_image = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}}],
    }
    with pytest.raises(InvalidRequest):
        tr.to_anthropic_request({"model": "m", "messages": [bad_image]}, "m")
    bad_args = {
        "role": "assistant",
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1,"}}],
    }
    with pytest.raises(InvalidRequest) as err:
        tr.to_anthropic_request({"model": "m", "messages": [bad_args]}, "m")
    assert err.value.param == "messages[0].tool_calls[0].function.arguments"


def test_json_mode_becomes_a_system_instruction_with_the_schema():
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
    }
    out = tr.to_anthropic_request(body, "m")
    assert "JSON" in out["system"] and '{"type":"object"}' in out["system"]


@pytest.mark.parametrize(
    ("model", "one"),
    [
        ("claude-sonnet-4-5-20250929", True),
        ("claude-sonnet-4-5", True),
        ("claude-sonnet-4-6", True),
        ("claude-haiku-4-5-20251001", True),
        ("claude-opus-4-1-20250805", True),
        ("claude-opus-4-5", True),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", True),  # Bedrock
        ("claude-opus-4-1@20250805", True),  # Vertex
        ("claude-sonnet-5", True),
        ("claude-sonnet-4-20250514", False),  # the 8 digits are a date, not a minor version
        ("claude-opus-4-20250514", False),
        ("claude-opus-4-0", False),
        ("claude-3-7-sonnet-latest", False),
        ("claude-3-5-haiku-20241022", False),
        ("claude-fake", False),
    ],
)
def test_which_models_take_one_sampler(model, one):
    assert tr.takes_one_sampler(model) is one


MSGS = [{"role": "user", "content": "hi"}]


def test_a_default_top_p_is_dropped_for_one_sampler_models():
    body = {"model": "m", "messages": MSGS, "temperature": 0.3, "top_p": 1}
    out = tr.to_anthropic_request(body, "claude-sonnet-4-5-20250929")
    assert out["temperature"] == 0.3 and "top_p" not in out
    alone = tr.to_anthropic_request({**body, "temperature": None}, "claude-opus-4-1")
    assert alone["top_p"] == 1 and "temperature" not in alone


def test_both_samplers_are_400_for_one_sampler_models_and_forwarded_for_older():
    body = {"model": "m", "messages": MSGS, "temperature": 0.3, "top_p": 0.9}
    with pytest.raises(InvalidRequest) as err:
        tr.to_anthropic_request(body, "claude-haiku-4-5")
    assert err.value.param == "top_p" and "not both" in err.value.message
    out = tr.to_anthropic_request(body, "claude-sonnet-4-20250514")
    assert (out["temperature"], out["top_p"]) == (0.3, 0.9)
    out = tr.to_anthropic_request({**body, "top_p": 1}, "claude-3-7-sonnet-latest")
    assert (out["temperature"], out["top_p"]) == (0.3, 1)


def test_blank_text_and_empty_turns_are_left_out_and_a_prefill_is_trimmed():
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": ""}, {"type": "text", "text": "a"}],
            },
            {"role": "assistant", "content": " \n"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": [{"type": "text", "text": "The answer is "}]},
        ],
    }
    out = tr.to_anthropic_request(body, "claude-x")
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]},
    ]
    assert refusal(out) is None
    with pytest.raises(InvalidRequest) as err:
        tr.to_anthropic_request({"model": "m", "messages": [{"role": "user", "content": " "}]}, "m")
    assert err.value.param == "messages"
    odd = {"role": "assistant", "content": [{"type": "text", "text": 5}]}  # Anthropic's to refuse
    out = tr.to_anthropic_request({"model": "m", "messages": [*MSGS, odd]}, "m")
    assert out["messages"][-1]["content"] == [{"type": "text", "text": 5}]


def test_tool_parameters_without_a_type_are_an_object_schema():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}]
    out = tr.to_anthropic_request({"model": "m", "messages": MSGS, "tools": tools}, "m")
    assert out["tools"][0]["input_schema"] == {"type": "object", "properties": {}}
    assert refusal(out) is None


def test_ingress_documents_become_text_and_pdfs_are_400():
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}}
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "read: "}, {**doc, "title": "T"}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [doc]}],
            },
        ],
    }
    out = tr.from_anthropic_request(body)
    assert out["messages"][0] == {"role": "user", "content": "read: T\n\nd"}
    assert out["messages"][1]["content"] is None and out["messages"][1]["tool_calls"]
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "d"}
    pdf = {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}
    body["messages"][0]["content"].append(pdf)
    with pytest.raises(InvalidRequest) as err:
        tr.from_anthropic_request(body)
    assert err.value.param == "messages[0].content[2].source"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_response_finish_reasons(stop, finish):
    msg = {
        "id": "msg_1",
        "type": "message",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": stop,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    out = tr.from_anthropic_response(msg, "pub")
    assert out["choices"][0]["finish_reason"] == finish and out["model"] == "pub"


def test_response_tool_use_and_cached_usage():
    msg = {
        "id": "msg_9",
        "type": "message",
        "stop_reason": "tool_use",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        ],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_read_input_tokens": 6,
            "cache_creation_input_tokens": 2,
        },
    }
    out = tr.from_anthropic_response(msg, "pub")
    message = out["choices"][0]["message"]
    assert message["content"] == "Checking."
    assert message["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": '{"city":"Paris"}',
    }
    assert out["usage"]["prompt_tokens"] == 18 and out["usage"]["completion_tokens"] == 4
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 6


def test_stream_events_become_openai_chunks():
    t = tr.AnthropicStreamToOpenAI("pub")
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 7}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 5},
        },
        {"type": "something_new_from_the_future"},
    ]
    chunks = [c for e in events for c in t.feed(e)]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0]["id"] == "toolu_1"
    assert deltas[3]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls" and t.finished
    assert t.usage_chunk()["usage"]["completion_tokens"] == 5
    assert t.usage_chunk()["usage"]["prompt_tokens"] == 7
    with pytest.raises(ValueError, match="overloaded"):
        t.feed({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})


def test_openai_stream_becomes_anthropic_events_in_order():
    t = tr.OpenAIStreamToAnthropic("pub")
    chunks = [
        {
            "id": "chatcmpl-1",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
        },
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {
            "id": "chatcmpl-1",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ]
                    },
                }
            ],
        },
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    ]
    raw = b"".join(b for c in chunks for b in t.feed(c)) + b"".join(t.finish())
    events = [orjson.loads(block.split(b"\ndata: ", 1)[1]) for block in raw.split(b"\n\n") if block]
    kinds = [e["type"] for e in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"]["output_tokens"] == 2


# ----------------------------------------------------------------------------- round trips

# Text Anthropic can carry: blank text is left out on the way (it refuses blank blocks).
text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20
).filter(str.strip)
blank_or_not = st.text(alphabet=st.sampled_from(" \n\tab"), max_size=3)
tool_call = st.builds(
    lambda i, name, args: {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(args).decode()},
    },
    st.integers(0, 99),
    st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
    st.dictionaries(
        st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.integers(-(2**53), 2**53), max_size=3
    ),
)


@st.composite
def conversations(draw, words=text):
    messages = [{"role": "system", "content": draw(words)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(words)})
        calls = draw(st.lists(tool_call, max_size=2, unique_by=lambda c: c["id"]))
        if calls:
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            messages += [
                {"role": "tool", "tool_call_id": c["id"], "content": draw(words)} for c in calls
            ]
        else:
            messages.append({"role": "assistant", "content": draw(words)})
    return {"model": "m", "messages": messages, "max_tokens": draw(st.integers(1, 4096))}


def normalise(messages):
    """Conversation content that must survive a round trip, argument JSON parsed."""
    out = []
    for m in messages:
        calls = [
            (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
            for c in m.get("tool_calls") or ()
        ]
        out.append((m["role"], m.get("content") or None, m.get("tool_call_id"), calls))
    return out


@settings(max_examples=150, deadline=None)
@given(conversations())
def test_request_round_trip_openai_anthropic_openai(body):
    back = tr.from_anthropic_request(tr.to_anthropic_request(body, "m"))
    final = body["messages"][-1]
    if final["role"] == "assistant" and final["content"]:
        final["content"] = final["content"].rstrip()  # a prefill may not end in whitespace
    assert normalise(back["messages"]) == normalise(body["messages"])
    assert back["max_tokens"] == body["max_tokens"]


@settings(max_examples=150, deadline=None)
@given(conversations(words=blank_or_not), st.sampled_from(["claude-fake", "claude-opus-4-5"]))
def test_translated_requests_are_ones_anthropic_accepts(body, model):
    """Whatever blank text, empty turns or prefill an OpenAI client sends, the Anthropic
    request is one the strict fake (written from Anthropic's API reference) accepts."""
    body["temperature"], body["top_p"] = 0.5, 1
    try:
        out = tr.to_anthropic_request(body, model)
    except InvalidRequest as exc:  # nothing but blank text: refused before any call
        assert exc.param == "messages"
        turns = [m for m in body["messages"] if m["role"] != "system"]
        assert not any(m["content"] and m["content"].strip() for m in turns)
        return
    assert refusal(out) is None, out


@settings(max_examples=150, deadline=None)
@given(
    text,
    st.lists(tool_call, max_size=3, unique_by=lambda c: c["id"]),
    st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 100),
)
def test_response_round_trip(content, calls, finish, prompt, completion, cached):
    completion_body = {
        "id": "chatcmpl-abc",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "message": {
                    "role": "assistant",
                    "content": content,
                    **({"tool_calls": calls} if calls else {}),
                },
            }
        ],
        "usage": {
            "prompt_tokens": prompt + cached,
            "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }
    back = tr.from_anthropic_response(tr.to_anthropic_response(completion_body, "pub"), "pub")
    choice = back["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"]["content"] == content
    assert normalise([choice["message"]]) == normalise([completion_body["choices"][0]["message"]])
    assert back["usage"]["prompt_tokens"] == prompt + cached
    assert back["usage"]["completion_tokens"] == completion
    assert back["usage"]["prompt_tokens_details"]["cached_tokens"] == cached
