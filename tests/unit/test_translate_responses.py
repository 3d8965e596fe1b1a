"""The Responses ⇄ chat translators and the Responses request model, without a gateway:
every Response and stream event checked against OpenAI's own schemas (tests/specs/)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from forge.errors import InvalidRequest
from forge.protocol.responses import CreateResponseRequest
from forge.translate import responses as tr
from gateway.errors import validation_error
from tests.specs.validate import event_violations, violations

TOOL = {"type": "function", "name": "weather", "parameters": {"type": "object"}}


def completion(
    content: str | None = "hello there",
    finish: str = "stop",
    calls: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-fake",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage
        or {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }


def error_of(body: dict[str, Any]) -> InvalidRequest:
    """The 400 the ingress answers ``body`` with (either path the model raises by)."""
    try:
        CreateResponseRequest.model_validate(body)
    except ValidationError as exc:
        return validation_error(exc.errors())
    except InvalidRequest as exc:
        return exc
    raise AssertionError("the body was accepted")


# ----------------------------------------------------------------- request model


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "input": "hi"},
        {
            "model": "m",
            "instructions": "terse",
            "input": [
                {"role": "developer", "content": "be brief"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this"},
                        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                    ],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "a cat", "annotations": []}],
                },
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {}}},
            "max_output_tokens": 64,
            "temperature": 0.5,
            "top_p": 0.9,
            "metadata": {"k": "v"},
            "parallel_tool_calls": False,
            "stream": False,
            "store": True,
            "previous_response_id": None,
            "user": "u1",
            "truncation": "disabled",
            "background": False,
            "include": [],
        },
        # what the Agents SDK sends for a gpt-5 model name, and the other reasoning fields
        {
            "model": "gpt-5.6-luna",
            "input": "x",
            "reasoning": {"effort": "none"},
            "text": {"verbosity": "low"},
        },
        {
            "model": "m",
            "input": "x",
            "reasoning": {
                "effort": "max",
                "summary": "auto",
                "context": "all_turns",
                "mode": "standard",
            },
        },
        {"model": "m", "input": "x", "reasoning": {"generate_summary": "concise"}},
        {"model": "m", "input": "x", "reasoning": {"effort": None, "summary": None}},
        {"model": "m", "input": "x", "reasoning": None, "text": {"verbosity": None}},
        # item references: typed, typed null, untyped; a call output may answer a call
        # that only a referenced item holds (the route checks once it has resolved them)
        {
            "model": "m",
            "input": [
                {"type": "item_reference", "id": "fc_1"},
                {"type": None, "id": "msg_1"},
                {"id": "msg_2"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
        },
    ],
)
def test_valid_requests_pass(body):
    CreateResponseRequest.model_validate(body)


@pytest.mark.parametrize(
    ("body", "param", "code", "says"),
    [
        ({"model": "m", "input": "x", "foo": 1}, "foo", "unknown_parameter", "Unknown parameter"),
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type",
         "unsupported_parameter", "web_search"),
        ({"model": "m", "input": "x", "tools": [{"type": "code_interpreter"}]}, "tools[0].type",
         "unsupported_parameter", "code_interpreter"),
        ({"model": "m", "input": "x", "tools": [{"type": "mcp", "server_label": "s"}]},
         "tools[0].type", "unsupported_parameter", "mcp"),
        ({"model": "m", "input": "x", "tools": [TOOL],
          "tool_choice": {"type": "function", "name": "other"}}, "tool_choice.name",
         "invalid_value", "other"),
        ({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "weather"}},
         "tool_choice.name", "invalid_value", "weather"),
        ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c9",
                                   "output": "x"}]}, "input[0].call_id", "invalid_value", "c9"),
        ({"model": "m", "input": [{"type": "item_reference"}]}, "input[0].id",
         "invalid_value", "required"),
        ({"model": "m", "input": "x", "reasoning": {"mode": "pro"}}, "reasoning.mode",
         "unsupported_parameter", "pro"),
        ({"model": "m", "input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort",
         "invalid_value", "minimal"),
        ({"model": "m", "input": "x", "reasoning": {"summary": "brief"}}, "reasoning.summary",
         "invalid_value", "concise"),
        ({"model": "m", "input": "x", "text": {"verbosity": "terse"}}, "text.verbosity",
         "invalid_value", "medium"),
        ({"model": "m", "input": "x", "background": True}, "background",
         "unsupported_parameter", "background"),
        ({"model": "m"}, "input", "invalid_value", "required"),
        ({"model": "m", "input": [{"role": "bot", "content": "x"}]}, "input[0].role",
         "invalid_value", "user"),
        ({"model": "m", "input": [{"type": "reasoning", "summary": []}]}, "input[0].type",
         "invalid_value", "function_call_output"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
         "input[0].content[0].type", "invalid_value", "input_image"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}},
         "text.format.schema", "invalid_value", "required"),
        ({"model": "m", "input": "x", "max_output_tokens": 8}, "max_output_tokens",
         "invalid_value", "16"),
        ({"model": "m", "input": "x", "temperature": 3}, "temperature", "invalid_value", "2"),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice",
         "invalid_value", "auto"),
        ({"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata.k", "invalid_value",
         "string"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_naming_the_param(body, param, code, says):
    error = error_of(body)
    assert error.status_code == 400 and error.error_type == "invalid_request_error"
    assert (error.param, error.code) == (param, code)
    assert says in error.message


# ----------------------------------------------------------------- request translation


def test_string_input_and_instructions():
    chat = tr.to_chat_request(
        {"model": "m", "input": "hi", "instructions": "terse", "max_output_tokens": 32}
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}],
        "max_completion_tokens": 32,
    }


def test_items_become_chat_messages_with_tool_calls_and_results():
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather "},
                                         {"type": "input_text", "text": "in Paris?"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2",
             "output": [{"type": "input_text", "text": "noon"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "and?"},
                                         {"type": "input_image", "image_url": "data:x"}]},
        ],
    }  # fmt: skip
    messages = tr.to_chat_request(body)["messages"]
    assert messages[0] == {"role": "user", "content": "weather in Paris?"}
    assert messages[1]["role"] == "assistant" and messages[1]["content"] == "Checking."
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["c1", "c2"]
    assert messages[1]["tool_calls"][1]["function"] == {"name": "time", "arguments": "{}"}
    assert messages[2:4] == [
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    ]
    assert messages[4]["content"][1] == {"type": "image_url", "image_url": {"url": "data:x"}}
    # a 400 the chat path raises on messages[4] names the client's input[6]
    assert tr.responses_param("messages[4].content[1]", body) == "input[6].content[1]"
    assert tr.responses_param("response_format", body) == "text.format"
    # Responses flattens json_schema into text.format (a 400 from constrained decoding)
    assert tr.responses_param("response_format.json_schema.schema", body) == "text.format.schema"
    assert tr.responses_param("messages", body) == "input"
    assert tr.responses_param("max_completion_tokens", body) == "max_output_tokens"
    assert tr.responses_param("tools[0].function", body) == "tools[0].function"


def test_a_function_call_without_an_assistant_turn_opens_one():
    messages = tr.to_chat_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            ],
        }
    )["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }


def test_tools_choice_format_and_sampling():
    chat = tr.to_chat_request(
        {
            "model": "m",
            "input": "x",
            "tools": [{**TOOL, "description": "d", "strict": True}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {
                "format": {"type": "json_schema", "name": "o", "schema": {"type": "object"},
                           "strict": True},
                "verbosity": "low",
            },
            "temperature": 0.2,
            "top_p": 0.5,
            "parallel_tool_calls": False,
            "user": "u",
            "stream": True,
            "store": True,
            "metadata": {"a": "b"},
        }
    )  # fmt: skip
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "d",
                "parameters": {"type": "object"},
                "strict": True,
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "o", "schema": {"type": "object"}, "strict": True},
    }
    assert (chat["temperature"], chat["top_p"], chat["parallel_tool_calls"]) == (0.2, 0.5, False)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["verbosity"] == "low" and chat["user"] == "u"
    assert "store" not in chat and "metadata" not in chat  # nothing is stored upstream either


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [({"type": "text"}, None), ({"type": "json_object"}, {"type": "json_object"})],
)
def test_text_formats(fmt, expected):
    chat = tr.to_chat_request({"model": "m", "input": "x", "text": {"format": fmt}})
    assert chat.get("response_format") == expected


@pytest.mark.parametrize(
    ("reasoning", "effort"),
    [
        ({"effort": "low"}, "low"),
        ({"effort": "none", "summary": "auto"}, "none"),  # no summary to ask the chat path for
        ({"summary": "detailed"}, None),
        ({"effort": None}, None),
        (None, None),
    ],
)
def test_reasoning_effort_becomes_the_chat_reasoning_effort(reasoning, effort):
    body = {"model": "m", "input": "x", "reasoning": reasoning, "text": {"verbosity": "high"}}
    CreateResponseRequest.model_validate(body)
    chat = tr.to_chat_request(body)
    assert chat.get("reasoning_effort") == effort and chat["verbosity"] == "high"
    assert "reasoning" not in chat and "summary" not in str(chat)


@pytest.mark.parametrize(
    ("reasoning", "echoed"),
    [
        (None, {"effort": None, "summary": None}),
        ({"effort": "low"}, {"effort": "low", "summary": None}),
        # accepted, and no summary produced: the echo says so
        ({"effort": "high", "summary": "auto"}, {"effort": "high", "summary": None}),
    ],
)
def test_reasoning_and_verbosity_are_echoed(reasoning, echoed):
    request = {"model": "gpt-5.6-luna", "input": "hi", "reasoning": reasoning,
               "text": {"verbosity": "low"}}  # fmt: skip
    for response in (
        tr.to_response(completion(), request),
        tr.ChatStreamToResponses(request).response,
    ):
        assert violations("Response", response) == []
        assert response["reasoning"] == echoed
        assert response["text"] == {"format": {"type": "text"}, "verbosity": "low"}
        assert not any(item["type"] == "reasoning" for item in response["output"])


@pytest.mark.parametrize(
    ("param", "expected"),
    [("reasoning_effort", "reasoning.effort"), ("verbosity", "text.verbosity")],
)
def test_chat_refusals_of_reasoning_and_verbosity_name_the_responses_field(param, expected):
    assert tr.responses_param(param, {"model": "m", "input": "x"}) == expected


def test_reasoning_downstream_of_the_chat_path_per_provider():
    """The translated request through each provider's chat translator, as a chat request
    with ``reasoning_effort`` and ``verbosity`` goes: Ollama's ``think`` (a 400 naming
    ``reasoning.effort`` for the efforts it has no level for); Anthropic and Gemini do not
    read either (as on the chat route); an OpenAI compatible upstream gets them as sent."""
    from forge.translate.anthropic import to_anthropic_request
    from forge.translate.gemini import to_gemini_request
    from forge.translate.ollama import to_ollama_chat

    def chat(effort: str) -> dict[str, Any]:
        body = {"model": "m", "input": "x", "reasoning": {"effort": effort},
                "text": {"verbosity": "low"}}  # fmt: skip
        CreateResponseRequest.model_validate(body)
        return tr.to_chat_request(body)

    assert to_ollama_chat(chat("low"), "m", False)["think"] == "low"
    assert to_ollama_chat(chat("none"), "m", False)["think"] is False
    with pytest.raises(InvalidRequest) as err:
        to_ollama_chat(chat("xhigh"), "m", False)
    assert tr.responses_param(err.value.param, {"model": "m", "input": "x"}) == "reasoning.effort"
    anthropic = to_anthropic_request(chat("high"), "claude")
    gemini = to_gemini_request(chat("high"))
    assert "effort" not in str(anthropic) and "thinking" not in str(anthropic)
    assert "thinkingConfig" not in str(gemini) and "verbosity" not in str(gemini)


def test_an_image_by_file_id_is_refused():
    with pytest.raises(InvalidRequest) as err:
        tr.to_chat_request(
            {"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "file_id": "file-1"}]}]}
        )  # fmt: skip
    assert err.value.param == "input[0].content[0].image_url"


def test_empty_input_is_refused():
    with pytest.raises(InvalidRequest) as err:
        tr.to_chat_request({"model": "m", "input": []})
    assert err.value.param == "input"


# ----------------------------------------------------------------- response translation


def test_text_response_conforms_to_the_spec():
    request = {"model": "gpt-test", "input": "hi", "instructions": "terse", "metadata": {"a": "b"}}
    response = tr.to_response(completion(), request)
    assert violations("Response", response) == []
    # the platform's own id, not the upstream's chat id: stored responses are keyed by it
    assert response["id"].startswith("resp_") and "abc123" not in response["id"]
    assert response["object"] == "response"
    assert response["status"] == "completed" and response["completed_at"]
    assert response["model"] == "gpt-test" and response["instructions"] == "terse"
    [item] = response["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"] == [
        {"type": "output_text", "text": "hello there", "annotations": [], "logprobs": []}
    ]
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 14,
    }
    assert response["metadata"] == {"a": "b"} and response["store"] is True  # as OpenAI
    assert (response["temperature"], response["top_p"], response["tool_choice"]) == (
        1.0,
        1.0,
        "auto",
    )


def test_tool_call_response_echoes_the_tools():
    request = {"model": "m", "input": "x", "tools": [TOOL], "tool_choice": "required"}
    calls = [{"id": "call_1", "type": "function",
              "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}]  # fmt: skip
    response = tr.to_response(completion(None, "tool_calls", calls), request)
    assert violations("Response", response) == []
    [item] = response["output"]
    assert item["type"] == "function_call" and item["id"].startswith("fc_")
    assert (item["call_id"], item["name"], item["arguments"]) == (
        "call_1",
        "weather",
        '{"city":"Paris"}',
    )
    assert response["tools"] == [
        {"type": "function", "name": "weather", "description": None,
         "parameters": {"type": "object"}, "strict": False}
    ]  # fmt: skip
    assert response["tool_choice"] == "required"


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_incomplete_responses(finish, reason):
    response = tr.to_response(
        completion(finish=finish), {"model": "m", "input": "x", "max_output_tokens": 16}
    )
    assert violations("Response", response) == []
    assert response["status"] == "incomplete" and response["completed_at"] is None
    assert response["incomplete_details"] == {"reason": reason}
    assert response["output"][0]["status"] == "incomplete"
    assert response["max_output_tokens"] == 16


def test_a_completion_without_usage_or_content():
    body = completion(content="")
    del body["usage"]
    response = tr.to_response(body, {"model": "m", "input": "x"})
    assert violations("Response", response) == []
    assert response["output"] == [] and "usage" not in response


# ----------------------------------------------------------------- stream translation


def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        out["usage"] = usage
        out["choices"] = []
    return out


USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def events(frames: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        head, data = frame.split(b"\n", 1)
        assert frame.endswith(b"\n\n") and data.startswith(b"data: ")
        event = orjson.loads(data.removeprefix(b"data: "))
        assert head == b"event: " + event["type"].encode()
        assert event_violations(event) == [], event
        out.append(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def run(request: dict[str, Any], chunks: list[dict[str, Any]], done: bool = True) -> list:
    t = tr.ChatStreamToResponses(request)
    frames = [f for c in chunks for f in t.feed(c)]
    if done:
        frames += t.finish()
    return events(frames)


def test_stream_of_text():
    evs = run(
        {"model": "m", "input": "hi"},
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "hello"}),
            chunk({"content": " there"}),
            chunk({}, "stop"),
            chunk({}, usage=USAGE),
        ],
    )
    assert [e["type"] for e in evs] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert evs[0]["response"]["status"] == "in_progress" and evs[0]["response"]["output"] == []
    assert evs[2]["item"]["content"] == [] and evs[2]["item"]["status"] == "in_progress"
    assert evs[6]["text"] == "hello there"
    done = evs[-1]["response"]
    assert done["id"] == evs[0]["response"]["id"] and done["status"] == "completed"
    assert done["output"][0]["content"][0]["text"] == "hello there"
    assert done["output"][0]["id"] == evs[2]["item"]["id"] == evs[4]["item_id"]
    assert done["usage"]["total_tokens"] == 7


def test_stream_of_text_then_two_tool_calls():
    evs = run(
        {"model": "m", "input": "hi", "tools": [TOOL]},
        [
            chunk({"content": "Let me check."}),
            chunk({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                   "function": {"name": "weather", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "c2", "type": "function",
                                   "function": {"name": "weather", "arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
        ],
    )  # fmt: skip
    kinds = [e["type"] for e in evs]
    assert kinds[8:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert evs[11]["arguments"] == '{"a":1}' and evs[11]["name"] == "weather"
    output = evs[-1]["response"]["output"]
    assert [o["type"] for o in output] == ["message", "function_call", "function_call"]
    assert [o.get("call_id") for o in output] == [None, "c1", "c2"]
    assert all(o["status"] == "completed" for o in output)


def test_stream_cut_by_max_tokens_is_incomplete():
    evs = run({"model": "m", "input": "hi"}, [chunk({"content": "a"}), chunk({}, "length")])
    assert evs[-1]["type"] == "response.incomplete"
    assert evs[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert evs[-2]["item"]["status"] == "incomplete"


def test_stream_error_fails_the_response():
    t = tr.ChatStreamToResponses({"model": "m", "input": "hi"})
    frames = t.feed(chunk({"content": "a"}))
    frames += t.fail({"message": "boom", "type": "server_error", "code": None})
    frames += t.finish()  # nothing after the terminal event
    evs = events(frames)
    assert [e["type"] for e in evs][-2:] == ["response.output_text.delta", "response.failed"]
    failed = evs[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "boom"}
    assert failed["output"][0]["status"] == "incomplete"


def test_stream_with_no_chunks_still_opens_and_completes():
    evs = run({"model": "m", "input": "hi"}, [])
    assert [e["type"] for e in evs] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]


# ----------------------------------------------------------------- stored conversations


def test_history_comes_after_instructions_and_before_input():
    history = [
        *tr.input_items({"input": "first"}),
        tr.message_item("msg_a", [tr.text_part("answer")], "completed"),
        tr.function_call_item("fc_1", "call_1", "weather", "{}", "completed"),
    ]
    body = {
        "model": "m",
        "instructions": "rules",
        "previous_response_id": "resp_1",
        "input": [{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
    }
    tr.check_call_outputs(body, history)  # answers a call of the stored conversation
    messages, sources = tr.chat_messages(body, history)
    assert messages == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "first"},
        {
            "role": "assistant",
            "content": "answer",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert sources == ["instructions", "previous_response_id", "previous_response_id", "input[0]"]
    assert tr.responses_param("messages[1].content[0]", body, history) == "previous_response_id"
    assert tr.responses_param("messages[3]", body, history) == "input[0]"
    with pytest.raises(InvalidRequest) as err:
        tr.check_call_outputs(body, [])
    assert err.value.param == "input[0].call_id"


def test_input_items_are_normalised_as_openai_lists_them():
    items = tr.input_items(
        {
            "input": [
                {"role": "user", "content": "hi", "id": "msg_mine"},
                {"type": "message", "role": "assistant", "content": [
                    {"type": "output_text", "text": "yo"}]},
                {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": [
                    {"type": "input_text", "text": "out"}]},
            ]
        }
    )  # fmt: skip
    assert items[0] == {
        "id": "msg_mine",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "hi"}],
    }
    assert items[1]["content"] == [tr.text_part("yo")] and items[1]["id"].startswith("msg_")
    assert items[2]["content"] == [
        {"type": "input_image", "detail": "auto", "image_url": "https://x/a.png"}
    ]
    assert [i["type"] for i in items[3:]] == ["function_call", "function_call_output"]
    assert items[3]["id"].startswith("fc_") and items[4]["id"].startswith("fco_")
    assert items[4]["output"] == [{"type": "input_text", "text": "out"}]
    for item, schema in zip(
        items,
        ["InputMessageResource", "OutputMessage", "InputMessageResource",
         "FunctionToolCallResource", "FunctionToolCallOutputResource"],
        strict=True,
    ):  # fmt: skip
        assert violations(schema, item) == [], item


# ----------------------------------------------------------------- item ids and references


def test_output_item_ids_name_their_response():
    """An `item_reference` to an output item leads to the stored response holding it."""
    calls = [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]
    done = completion("Let me check.", "tool_calls", calls)
    response = tr.to_response(done, {"model": "m", "input": "x"})
    ids = [o["id"] for o in response["output"]]
    assert [i.split("_")[0] for i in ids] == ["msg", "fc"] and len(set(ids)) == 2
    assert {tr.response_of_item(i) for i in ids} == {response["id"]}
    evs = run(
        {"model": "m", "input": "hi", "tools": [TOOL]},
        [
            chunk({"content": "Let me check."}),
            chunk({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                   "function": {"name": "weather", "arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
        ],
    )  # fmt: skip
    final = evs[-1]["response"]
    assert {tr.response_of_item(o["id"]) for o in final["output"]} == {final["id"]}
    for other in ("msg_1", "fc_" + "a" * 32, "msg_" + "g" * 36, "nothing"):
        assert tr.response_of_item(other) is None


def test_references_are_replaced_by_their_items():
    body = {"model": "m", "input": [
        {"role": "user", "content": "hi"},
        {"type": "item_reference", "id": "msg_x"},
        {"id": "fc_y"},
    ]}  # fmt: skip
    assert tr.references(body) == [(1, "msg_x"), (2, "fc_y")]
    assert tr.references({"model": "m", "input": "hi"}) == []
    item = {"id": "msg_x", "type": "message", "role": "assistant", "content": "hello"}
    out = tr.with_referenced(body, {1: item})
    assert out["input"] == [body["input"][0], item, body["input"][2]]
    assert body["input"][1] == {"type": "item_reference", "id": "msg_x"}  # not changed
