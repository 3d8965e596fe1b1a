"""Anthropic both ways, in-process: an Anthropic model behind the OpenAI API, and any model
behind the Anthropic-compatible `/v1/messages`, driven by the official SDKs."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.unit.harness import in_process_gateway, platform_config, usage_rows

MSG = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


@pytest.fixture
async def gw(fake_openai, fake_anthropic, sqlite_engine):
    config = platform_config(fake_openai.base_url, fake_anthropic.url)
    async with in_process_gateway(config, sqlite_engine) as h:
        yield h


# ----------------------------------------------------------------- Anthropic as a provider


async def test_openai_sdk_to_an_anthropic_model(gw, fake_anthropic):
    c = await gw.sdk().chat.completions.create(
        model="claude-test",
        messages=[{"role": "system", "content": "terse"}, *MSG],
        max_tokens=3,
        stop=["zulu"],
        temperature=0.2,
    )
    assert c.choices[0].message.content == "alpha bravo charlie"
    assert c.choices[0].finish_reason == "length" and c.model == "claude-test"
    assert c.usage.prompt_tokens == 12 and c.usage.completion_tokens == 3
    sent = fake_anthropic.requests[-1]
    assert sent["body"]["system"] == "terse" and sent["body"]["model"] == "claude-fake"
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["anthropic-version"]
    assert "sk-ant-test" in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    [row] = await usage_rows(gw)
    assert row["provider"] == "claude" and row["cost_usd"] == pytest.approx((12 * 3 + 3 * 15) / 1e6)


async def test_anthropic_tools_round_trip_and_stream(gw):
    c = await gw.sdk().chat.completions.create(model="claude-test", messages=MSG, tools=TOOLS)
    call = c.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("weather", '{"location":"Paris"}')
    assert c.choices[0].finish_reason == "tool_calls"
    stream = await gw.sdk().chat.completions.create(
        model="claude-test",
        messages=MSG,
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [x async for x in stream]
    args = "".join(
        tc.function.arguments or ""
        for x in chunks
        if x.choices
        for tc in x.choices[0].delta.tool_calls or ()
    )
    assert args == '{"location": "Paris"}'
    assert [x.choices[0].finish_reason for x in chunks if x.choices][-1] == "tool_calls"
    assert chunks[-1].usage.prompt_tokens == 12


async def test_anthropic_stream_text_and_cached_usage(gw):
    stream = await gw.sdk().chat.completions.create(
        model="claude-cached", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    chunks = [x async for x in stream]
    text = "".join(x.choices[0].delta.content or "" for x in chunks if x.choices)
    assert text == "alpha bravo charlie delta echo foxtrot golf hotel"
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 17


@pytest.mark.parametrize(
    ("model", "status"),
    [("claude-error-429", 429), ("claude-error-529", 503), ("claude-malformed", 502)],
)
async def test_anthropic_errors_map_to_openai_statuses(gw, model, status):
    with pytest.raises(openai.APIStatusError) as err:
        await gw.sdk().chat.completions.create(model=model, messages=MSG)
    assert err.value.status_code == status
    if status == 429:
        assert err.value.response.headers["retry-after"] == "11"


@pytest.mark.parametrize("model", ["claude-midstream-error", "claude-truncated"])
async def test_anthropic_failing_mid_stream(gw, model):
    resp = await gw.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {gw.user_key}"},
        json={"model": model, "messages": MSG, "stream": True},
    )
    events = [e for e in resp.text.split("\n\n") if e]
    assert resp.status_code == 200 and events[-1] == "data: [DONE]" and '"error"' in events[-2]


async def test_unsupported_fields_are_400_before_any_upstream_call(gw, fake_anthropic):
    before = len(fake_anthropic.requests)
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().chat.completions.create(model="claude-test", messages=MSG, n=3)
    assert err.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().embeddings.create(model="claude-test", input="x")
    assert len(fake_anthropic.requests) == before


# ----------------------------------------------------------------- the /v1/messages ingress


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
async def test_anthropic_sdk_reaches_any_model(gw, model):
    client = gw.anthropic_sdk()
    msg = await client.messages.create(
        model=model, max_tokens=50, system="terse", messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.type == "message" and msg.role == "assistant" and msg.model == model
    assert msg.content[0].text.startswith("alpha bravo")
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 8


async def test_anthropic_sdk_streams_from_an_openai_model(gw):
    client = gw.anthropic_sdk()
    async with client.messages.stream(
        model="gpt-test", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "alpha bravo charlie delta echo foxtrot golf hotel"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 8


async def test_anthropic_sdk_tool_use_through_an_openai_model(gw):
    client = gw.anthropic_sdk()
    msg = await client.messages.create(
        model="gpt-test",
        max_tokens=50,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"name": "weather", "input_schema": {"type": "object"}}],
    )
    block = next(b for b in msg.content if b.type == "tool_use")
    assert block.name == "weather" and block.input == {"location": "Paris"}
    assert msg.stop_reason == "tool_use"
    follow_up = await client.messages.create(
        model="gpt-test",
        max_tokens=50,
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
            },
        ],
    )
    assert follow_up.content[0].text


async def test_anthropic_errors_in_anthropic_shape(gw):
    client = gw.anthropic_sdk()
    with pytest.raises(anthropic.NotFoundError) as err:
        await client.messages.create(
            model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.AuthenticationError):
        await gw.anthropic_sdk(key="sk-forge-wrong").messages.create(
            model="gpt-test", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    resp = await gw.http.post(
        "/v1/messages",
        json={"model": "gpt-test", "messages": []},
        headers={"x-api-key": gw.user_key},
    )
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.RateLimitError) as err:
        await client.messages.create(
            model="error-429", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.response.headers["retry-after"] == "7"


async def test_count_tokens(gw):
    resp = await gw.http.post(
        "/v1/messages/count_tokens",
        headers={"x-api-key": gw.user_key},
        json={"model": "gpt-test", "messages": [{"role": "user", "content": "x" * 400}]},
    )
    assert resp.status_code == 200 and 90 <= resp.json()["input_tokens"] <= 130
