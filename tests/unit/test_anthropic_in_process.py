"""Anthropic both ways, in-process: an Anthropic model behind the OpenAI API, and any model
behind the Anthropic-compatible `/v1/messages`, driven by the official SDKs."""

from __future__ import annotations

import anthropic
import openai
import pytest

from forge.config import PlatformConfig
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


# ----------------------------------------------------------------- hostile /v1/messages bodies

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": [1]}]}]},
            "messages[0].content[0].tool_result.tool_use_id",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "content": [1, 2]}],
                    }
                ]
            },
            "messages[0].content[0].tool_result.content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}],
                    }
                ]
            },
            "messages[0].content[0].tool_result.content",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]},
            "messages[0].content[0].text.text",
        ),
        ({"system": [{"type": "text", "text": 3}]}, "system[0].text"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": "x"}]}]},
            "messages[0].content[0].image.source",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            "messages[0].content[0]",
        ),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.tool.name"),
        ({"tools": [{"name": "f", "input_schema": []}]}, "tools[0].input_schema"),
        ({"metadata": {"user_id": 5}}, "metadata.user_id"),
        ({"stop_sequences": ["a", 1]}, "stop_sequences[1]"),
        ({"temperature": 1.5}, "temperature"),
        ({"top_k": "5"}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        (
            {
                "messages": [
                    {"role": "user", "content": " ", "x": 1},
                    {"role": "user", "content": []},
                ]
            },
            "messages",
        ),
        (
            {
                "messages": [
                    USER,
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                    },
                    USER,
                ]
            },
            "messages",
        ),
    ],
)
async def test_malformed_messages_bodies_are_400_in_anthropic_shape(
    gw, fake_anthropic, change, field
):
    """Each was a 500 or reached the upstream; now a 400 naming the field, before any call.
    count_tokens shares the conversation fields and must refuse the same way."""
    before = len(fake_anthropic.requests)
    body = {"model": "claude-test", "max_tokens": 5, "messages": [USER], **change}
    paths = ["/v1/messages"]
    if field.split("[")[0].split(".")[0] in ("messages", "system", "tools", "tool_choice"):
        paths.append("/v1/messages/count_tokens")
    for path in paths:
        resp = await gw.http.post(path, json=body, headers={"x-api-key": gw.user_key})
        assert resp.status_code == 400, resp.text
        error = resp.json()
        assert set(error) == {"type", "error"} and error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert f"'{field}'" in error["error"]["message"], error
    assert len(fake_anthropic.requests) == before


async def test_malformed_block_through_the_anthropic_sdk(gw):
    with pytest.raises(anthropic.BadRequestError) as err:
        await gw.anthropic_sdk().messages.create(
            model="gpt-test",
            max_tokens=5,
            messages=[{"role": "user", "content": [{"type": "text", "text": 42}]}],  # type: ignore[list-item]
        )
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].text.text" in err.value.body["error"]["message"]


# ----------------------------------------------------------------- temperature with top_p

ONE_SAMPLER_ID = "claude-sonnet-4-5-20250929"
SAMPLERS = {"temperature": 0.2, "top_p": 0.9}
BOTH_SAMPLERS_ID = "claude-sonnet-4-20250514"


@pytest.fixture
async def claude4(fake_openai, fake_anthropic, sqlite_engine):
    """The gateway with current Claude ids on the fake: one that takes only one of
    ``temperature`` and ``top_p`` (Sonnet 4.5), and one that takes both (Sonnet 4)."""
    base = platform_config(fake_openai.base_url, fake_anthropic.url)
    raw = base.model_dump(mode="json", exclude_unset=True)
    raw["models"] += [
        {"name": "sonnet-45", "provider": "claude", "model": ONE_SAMPLER_ID},
        {"name": "sonnet-4", "provider": "claude", "model": BOTH_SAMPLERS_ID},
    ]
    async with in_process_gateway(PlatformConfig.model_validate(raw), sqlite_engine) as h:
        yield h


async def test_a_default_top_p_is_dropped_for_one_sampler_models(claude4, fake_anthropic):
    c = await claude4.sdk().chat.completions.create(
        model="sonnet-45", messages=MSG, temperature=0.2, top_p=1
    )
    assert c.choices[0].message.content
    sent = fake_anthropic.requests[-1]["body"]
    assert sent["model"] == ONE_SAMPLER_ID and sent["temperature"] == 0.2 and "top_p" not in sent
    msg = await claude4.anthropic_sdk().messages.create(
        model="sonnet-45", max_tokens=5, messages=MSG, extra_body={"temperature": 0.2, "top_p": 1}
    )
    assert msg.content[0].text and "top_p" not in fake_anthropic.requests[-1]["body"]


async def test_both_samplers_are_400_before_any_upstream_call(claude4, fake_anthropic):
    before = len(fake_anthropic.requests)
    with pytest.raises(openai.BadRequestError) as err:
        await claude4.sdk().chat.completions.create(
            model="sonnet-45", messages=MSG, temperature=0.2, top_p=0.9
        )
    assert err.value.body["param"] == "top_p" and "not both" in err.value.body["message"]
    with pytest.raises(anthropic.BadRequestError) as err:
        await claude4.anthropic_sdk().messages.create(
            model="sonnet-45", max_tokens=5, messages=MSG, extra_body=SAMPLERS
        )
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "top_p" in err.value.body["error"]["message"]
    assert len(fake_anthropic.requests) == before
    c = await claude4.sdk().chat.completions.create(model="sonnet-45", messages=MSG, top_p=0.9)
    assert c.choices[0].message.content and fake_anthropic.requests[-1]["body"]["top_p"] == 0.9


async def test_older_models_get_both_samplers(claude4, fake_anthropic):
    c = await claude4.sdk().chat.completions.create(
        model="sonnet-4", messages=MSG, temperature=0.2, top_p=0.9
    )
    assert c.choices[0].message.content
    sent = fake_anthropic.requests[-1]["body"]
    assert (sent["model"], sent["temperature"], sent["top_p"]) == (BOTH_SAMPLERS_ID, 0.2, 0.9)


# ----------------------------------------------------------------- the fake is as strict as the API


@pytest.fixture
def upstream(fake_anthropic):
    """The official SDK straight at the fake, as the provider reaches Anthropic."""
    return anthropic.AsyncAnthropic(
        api_key="sk-ant-test", base_url=fake_anthropic.url, max_retries=0
    )


async def test_the_fake_refuses_both_samplers_for_one_sampler_models(upstream):
    with pytest.raises(anthropic.BadRequestError) as err:
        await upstream.messages.create(
            model=ONE_SAMPLER_ID, max_tokens=5, messages=MSG, extra_body={**SAMPLERS, "top_p": 1}
        )
    assert err.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "`temperature` and `top_p` cannot both be specified for this model. "
        "Please use only one.",
    }
    for model, extra in ((ONE_SAMPLER_ID, {"top_p": 1}), (BOTH_SAMPLERS_ID, SAMPLERS)):
        msg = await upstream.messages.create(
            model=model, max_tokens=5, messages=MSG, extra_body=extra
        )
        assert msg.content[0].text


TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages.0.content.0.text.text: Input should be a valid string",
        ),
        ({"messages": [{"role": "user", "content": ""}]}, "text content blocks must be non-empty"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": " "}]}]},
            "non-whitespace text",
        ),
        ({"n": 2}, "n: Extra inputs are not permitted"),
        ({"metadata": {"user_id": "u", "x": 1}}, "metadata.x: Extra inputs are not permitted"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema: Field required"),
        (
            {"tools": [{"name": "f", "input_schema": {"type": "object"}}] * 2},
            "Tool names must be unique",
        ),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.tool.name: Field required"),
        ({"messages": [*MSG, {"role": "assistant", "content": "So "}]}, "trailing whitespace"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}
                ]
            },
            "unexpected `tool_use_id`",
        ),
        (
            {"messages": [*MSG, {"role": "assistant", "content": [TOOL_USE]}, *MSG]},
            "without `tool_result`",
        ),
        (
            {
                "messages": [
                    *MSG,
                    {"role": "assistant", "content": [TOOL_USE]},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "x"},
                            {"type": "tool_result", "tool_use_id": "toolu_1"},
                        ],
                    },
                ]
            },
            "at the beginning of this message",
        ),
    ],
)
async def test_the_fake_refuses_what_anthropic_refuses(upstream, change, message):
    body = {"max_tokens": 5, "messages": MSG, **change}
    with pytest.raises(anthropic.BadRequestError) as err:
        # extra_body: this SDK no longer takes sampling parameters as arguments
        await upstream.messages.create(
            model="claude-fake", max_tokens=5, messages=MSG, extra_body=body
        )
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert message in err.value.body["error"]["message"]


async def test_a_conversation_of_thinking_alone_is_a_400(gw):
    """Found by the fuzzer: validation let it through, and nothing was left to send once
    the thinking was dropped (a 400 from deep in the translation, not the validator)."""
    thinking = {"type": "thinking", "thinking": "0", "signature": "s"}
    body = {
        "model": "claude-test",
        "max_tokens": 5,
        "messages": [{"role": "assistant", "content": [thinking]}],
    }
    resp = await gw.http.post("/v1/messages", json=body, headers={"x-api-key": gw.user_key})
    assert resp.status_code == 400
    assert "needs content besides thinking blocks" in resp.json()["error"]["message"]
