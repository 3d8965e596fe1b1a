"""`POST /v1/responses` in-process, driven by the official `openai` SDK against the fake
upstreams: every Response and stream event checked against OpenAI's own schemas."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from tests.specs.validate import event_violations, violations
from tests.unit.harness import in_process_gateway, platform_config, usage_rows

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel"
TOOL = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    "strict": False,
}
SCHEMA_FORMAT = {
    "type": "json_schema",
    "name": "answer",
    "schema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture
async def gw(fake_openai, fake_anthropic, sqlite_engine):
    config = platform_config(fake_openai.base_url, fake_anthropic.url)
    async with in_process_gateway(config, sqlite_engine) as h:
        yield h


async def post(gw, body: dict[str, Any], path: str = "/v1/responses"):
    return await gw.http.post(path, json=body, headers={"authorization": f"Bearer {gw.user_key}"})


def sse_events(text: str) -> list[dict[str, Any]]:
    """The stream's events, each checked for its framing and against the spec."""
    out = []
    for block in text.split("\n\n"):
        if not block:
            continue
        head, data = block.split("\n", 1)
        event = orjson.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        assert event_violations(event) == [], event
        out.append(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


# ----------------------------------------------------------------- answers


async def test_plain_text(gw, fake_openai):
    r = await gw.sdk().responses.create(model="gpt-test", input="hello there")
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert r.output_text == WORDS and r.model == "gpt-test"
    assert r.usage.output_tokens == 8 and r.usage.total_tokens == r.usage.input_tokens + 8
    sent = fake_openai.requests[-1]
    assert sent["path"].endswith("/chat/completions")
    assert sent["body"]["messages"] == [{"role": "user", "content": "hello there"}]
    [row] = await usage_rows(gw)
    assert (row["endpoint"], row["model"], row["provider"]) == (
        "chat/completions",
        "gpt-test",
        "fake",
    )
    assert row["completion_tokens"] == 8 and not row["stream"] and row["status"] == "ok"


async def test_raw_response_conforms_to_the_spec(gw):
    resp = await post(gw, {"model": "gpt-test", "input": "hi", "metadata": {"k": "v"}})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert violations("Response", body) == []
    assert body["metadata"] == {"k": "v"} and body["store"] is True


async def test_instructions_and_settings_reach_the_chat_path(gw, fake_openai):
    r = await gw.sdk().responses.create(
        model="gpt-test",
        instructions="Be terse.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        max_output_tokens=16,
        temperature=0.3,
        top_p=0.9,
        user="u-1",
    )
    sent = fake_openai.requests[-1]["body"]
    assert sent["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
    ]
    assert sent["max_completion_tokens"] == 16 and "max_tokens" not in sent
    assert (sent["temperature"], sent["top_p"], sent["user"]) == (0.3, 0.9, "u-1")
    assert r.instructions == "Be terse." and r.max_output_tokens == 16
    assert (r.temperature, r.top_p) == (0.3, 0.9)


async def test_function_tool_call_and_its_output(gw, fake_openai):
    client = gw.sdk()
    r = await client.responses.create(model="gpt-test", input="weather in Paris?", tools=[TOOL])
    [call] = r.output
    assert call.type == "function_call" and call.name == "weather" and call.status == "completed"
    assert call.arguments == '{"location": "Paris"}' and call.call_id == "call_0"
    assert r.tools[0].name == "weather" and r.tool_choice == "auto"
    sent = fake_openai.requests[-1]["body"]
    assert sent["tools"][0] == {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city.",
            "parameters": TOOL["parameters"],
            "strict": False,
        },
    }
    follow = await client.responses.create(
        model="gpt-test",
        input=[
            {"role": "user", "content": "weather in Paris?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
        tools=[TOOL],
        tool_choice="none",
    )
    assert follow.output_text == WORDS
    sent = fake_openai.requests[-1]["body"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_0"
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_0", "content": "sunny"}
    assert sent["tool_choice"] == "none"


async def test_tool_choice_naming_a_function(gw, fake_openai):
    r = await gw.sdk().responses.create(
        model="gpt-test",
        input="x",
        tools=[TOOL],
        tool_choice={"type": "function", "name": "weather"},
    )
    assert r.output[0].type == "function_call"
    assert fake_openai.requests[-1]["body"]["tool_choice"] == {
        "type": "function",
        "function": {"name": "weather"},
    }


async def test_text_format_json_schema(gw, fake_openai):
    r = await gw.sdk().responses.create(
        model="gpt-test", input="answer in JSON", text={"format": SCHEMA_FORMAT}
    )
    sent = fake_openai.requests[-1]["body"]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {k: v for k, v in SCHEMA_FORMAT.items() if k != "type"},
    }
    assert r.text.format.type == "json_schema" and r.text.format.name == "answer"
    # the fake upstream answers plain words whatever the format: nothing to parse here


async def test_an_anthropic_model_behind_responses(gw, fake_anthropic):
    r = await gw.sdk().responses.create(
        model="claude-test", instructions="terse", input="hi", max_output_tokens=16
    )
    assert r.status == "completed" and r.output_text.startswith("alpha bravo")
    assert fake_anthropic.requests[-1]["body"]["system"] == "terse"


async def test_reasoning_and_verbosity_reach_the_chat_path(gw, fake_openai):
    """What the Agents SDK adds for a gpt-5 model name: ``reasoning.effort`` becomes the
    chat ``reasoning_effort``, ``text.verbosity`` the chat ``verbosity``, both echoed."""
    r = await gw.sdk().responses.create(
        model="gpt-test",
        input="hi",
        reasoning={"effort": "none", "summary": "auto"},
        text={"verbosity": "low"},
    )
    sent = fake_openai.requests[-1]["body"]
    assert (sent["reasoning_effort"], sent["verbosity"]) == ("none", "low")
    assert "reasoning" not in sent and "text" not in sent
    assert r.output_text == WORDS and [item.type for item in r.output] == ["message"]
    # the summary asked for is accepted, and none is made (the chat path has none)
    assert (r.reasoning.effort, r.reasoning.summary) == ("none", None)
    assert r.text.verbosity == "low"
    raw = await post(
        gw, {"model": "gpt-test", "input": "hi", "reasoning": {"effort": "high"},
             "text": {"verbosity": "high"}, "stream": True}
    )  # fmt: skip
    assert raw.status_code == 200
    events = sse_events(raw.text)
    assert events[0]["response"]["reasoning"] == {"effort": "high", "summary": None}
    assert events[-1]["response"]["text"]["verbosity"] == "high"
    assert (fake_openai.requests[-1]["body"]["reasoning_effort"]) == "high"


async def test_reasoning_on_an_anthropic_model_is_as_on_the_chat_route(gw, fake_anthropic):
    """The Anthropic translator does not read ``reasoning_effort`` or ``verbosity`` on the
    chat route (a 200, nothing of them upstream): the same through Responses."""
    headers = {"authorization": f"Bearer {gw.user_key}"}
    chat = await gw.http.post(
        "/v1/chat/completions",
        json={"model": "claude-test", "messages": [{"role": "user", "content": "hi"}],
              "reasoning_effort": "low", "verbosity": "low"},
        headers=headers,
    )  # fmt: skip
    assert chat.status_code == 200, chat.text
    via_chat = fake_anthropic.requests[-1]["body"]
    resp = await post(
        gw, {"model": "claude-test", "input": "hi", "reasoning": {"effort": "low"},
             "text": {"verbosity": "low"}}
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert violations("Response", resp.json()) == []
    assert resp.json()["reasoning"] == {"effort": "low", "summary": None}
    assert fake_anthropic.requests[-1]["body"] == via_chat


# ----------------------------------------------------------------- streams


async def test_stream_event_order_and_text(gw):
    stream = await gw.sdk().responses.create(model="gpt-test", input="hi", stream=True)
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"} and len(kinds[4:-4]) == 8
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == WORDS
    final = events[-1].response
    assert final.output_text == WORDS and final.usage.output_tokens == 8
    rows = await usage_rows(gw)
    assert rows[0]["endpoint"] == "chat/completions" and rows[0]["stream"]
    assert rows[0]["completion_tokens"] == 8 and not rows[0]["usage_estimated"]


async def test_stream_helper_final_response(gw):
    async with gw.sdk().responses.stream(model="gpt-test", input="hi") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == WORDS and final.output_text == WORDS
    assert final.status == "completed"


async def test_raw_stream_conforms_to_the_spec(gw):
    resp = await post(
        gw, {"model": "gpt-test", "input": "hi", "stream": True, "instructions": "terse"}
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert events[-1]["type"] == "response.completed"
    assert "[DONE]" not in resp.text  # OpenAI's Responses streams end without it


async def test_stream_of_a_tool_call(gw):
    resp = await post(gw, {"model": "gpt-test", "input": "x", "tools": [TOOL], "stream": True})
    events = sse_events(resp.text)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    item = events[-2]["item"]
    assert (item["name"], item["arguments"]) == ("weather", '{"location": "Paris"}')
    async with gw.sdk().responses.stream(model="gpt-test", input="x", tools=[TOOL]) as stream:
        final = await stream.get_final_response()
    assert final.output[0].type == "function_call" and final.output[0].call_id == "call_0"


async def test_stream_failing_midway_ends_failed(gw):
    resp = await post(gw, {"model": "midstream-error", "input": "x", "stream": True})
    events = sse_events(resp.text)
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["status"] == "incomplete"
    assert "".join(e.get("delta", "") for e in events) == "alpha bravo"


async def test_stream_refused_before_output_is_an_http_error(gw):
    with pytest.raises(openai.RateLimitError) as err:
        await gw.sdk().responses.create(model="error-429", input="x", stream=True)
    assert err.value.body["code"] == "rate_limit_exceeded"


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("extra", "param", "code", "says"),
    [
        ({"foo": 1}, "foo", "unknown_parameter", "Unknown parameter: 'foo'"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter",
         "web_search"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type",
         "unsupported_parameter", "file_search"),
        ({"tools": [TOOL], "tool_choice": {"type": "function", "name": "time"}},
         "tool_choice.name", "invalid_value", "time"),
        ({"input": [{"type": "function_call_output", "call_id": "call_9", "output": "x"}]},
         "input[0].call_id", "invalid_value", "call_9"),
        ({"reasoning": {"mode": "pro"}}, "reasoning.mode", "unsupported_parameter", "pro"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "invalid_value", "minimal"),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
         "input[0].content[0].text", "invalid_value", "Field required"),
        ({"text": {"format": {"type": "xml"}}}, "text.format.type", "invalid_value",
         "json_schema"),
        ({"max_output_tokens": 1}, "max_output_tokens", "invalid_value", "16"),
    ],
)  # fmt: skip
async def test_bad_input_is_400_in_openai_shape_before_any_upstream_call(
    gw, fake_openai, extra, param, code, says
):
    before = len(fake_openai.requests)
    body = {"model": "gpt-test", "input": "hi", **extra}
    resp = await post(gw, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)
    assert says in error["message"]
    with pytest.raises(openai.BadRequestError) as err:  # and the SDK raises it as such
        await gw.sdk().responses.create(
            model="gpt-test",
            input=body["input"],
            extra_body={k: v for k, v in extra.items() if k != "input"},
        )
    assert err.value.body["param"] == param
    assert len(fake_openai.requests) == before


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("text-only", {"text": {"format": SCHEMA_FORMAT}}, "text.format"),
        ("text-only", {"tools": [TOOL]}, "tools"),
        (
            "text-only",
            {"input": [{"role": "developer", "content": "d"}, {"role": "user", "content": [
                {"type": "input_text", "text": "what?"},
                {"type": "input_image", "image_url": "https://example.com/a.png"}]}]},
            "input[1].content[1]",
        ),
    ],
)  # fmt: skip
async def test_capability_refusals_name_the_responses_field(gw, model, extra, param):
    resp = await post(gw, {"model": model, "input": "hi", "instructions": "x", **extra})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["param"], error["code"]) == (param, "unsupported_parameter")


async def test_unknown_model_is_404(gw):
    with pytest.raises(openai.NotFoundError) as err:
        await gw.sdk().responses.create(model="no-such-model", input="x")
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/nope"), ("GET", "/v1/responses/a/b"), ("PUT", "/v1/responses/r/c")],
)
async def test_unknown_routes_are_404_naming_method_and_path(gw, method, path):
    resp = await gw.http.request(
        method, path, headers={"authorization": f"Bearer {gw.user_key}"}, json={}
    )
    assert resp.status_code == 404
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] == f"Invalid URL ({method} {path})"
    assert (error["type"], error["code"]) == ("invalid_request_error", "unknown_url")


async def test_bad_key_is_401(gw):
    with pytest.raises(openai.AuthenticationError):
        await gw.sdk(key="sk-forge-wrong").responses.create(model="gpt-test", input="x")
