"""One contract, every provider: the same scenarios through the gateway with the official
openai SDK, each provider reached by its own client against a fake of its wire protocol."""

from __future__ import annotations

import openai
import pytest

from forge.config import PlatformConfig
from tests.contract.cases import CASES, ProviderCase
from tests.unit.harness import in_process_gateway, usage_rows

MSG = [{"role": "user", "content": "hello there"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
async def case(request, sqlite_engine):
    spec: ProviderCase = request.param
    fake = request.getfixturevalue(spec.fake)
    config = PlatformConfig.model_validate(
        {"providers": [spec.provider_config(fake)], "models": spec.models()}
    )
    async with in_process_gateway(config, sqlite_engine) as gw:
        yield spec, gw


def model(spec: ProviderCase, scenario: str = "ok") -> str:
    return f"{spec.name}-{scenario}"


async def test_text(case):
    spec, gw = case
    c = await gw.sdk().chat.completions.create(model=model(spec), messages=MSG, max_tokens=50)
    assert c.choices[0].message.content and c.choices[0].finish_reason == "stop"
    assert c.model == model(spec)
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0
    [row] = await usage_rows(gw)
    assert row["provider"] == spec.name and row["status"] == "ok" and not row["usage_estimated"]


async def test_stream_matches_text_and_reports_usage(case):
    spec, gw = case
    whole = await gw.sdk().chat.completions.create(model=model(spec), messages=MSG, max_tokens=50)
    stream = await gw.sdk().chat.completions.create(
        model=model(spec),
        messages=MSG,
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.split() == whole.choices[0].message.content.split()
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


async def test_tools_round_trip(case):
    spec, gw = case
    if "tools" not in spec.supports:
        pytest.skip(f"{spec.name} has no tools")
    client = gw.sdk()
    c = await client.chat.completions.create(model=model(spec), messages=MSG, tools=TOOLS)
    call = c.choices[0].message.tool_calls[0]
    assert call.function.name == "weather" and c.choices[0].finish_reason == "tool_calls"
    follow = await client.chat.completions.create(
        model=model(spec),
        tools=TOOLS,
        messages=[
            *MSG,
            c.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    assert follow.choices[0].message is not None


async def test_image_part(case):
    spec, gw = case
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": PNG}},
    ]
    c = await gw.sdk().chat.completions.create(
        model=model(spec), messages=[{"role": "user", "content": content}], max_tokens=50
    )
    assert c.choices[0].message.content


@pytest.mark.parametrize(
    ("scenario", "status"), [("error-429", 429), ("error-500", 502), ("hang", 504)]
)
@pytest.mark.parametrize("stream", [False, True])
async def test_errors_and_timeouts(case, scenario, status, stream):
    spec, gw = case
    resp = await gw.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {gw.user_key}"},
        json={"model": model(spec, scenario), "messages": MSG, "stream": stream},
    )
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if status == 429:
        assert int(resp.headers["retry-after"]) > 0
    [row] = await usage_rows(gw)
    assert row["status"] == "error" and row["http_status"] == status


@pytest.mark.parametrize("scenario", ["midstream-error", "truncated"])
async def test_failure_mid_stream(case, scenario):
    spec, gw = case
    resp = await gw.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {gw.user_key}"},
        json={"model": model(spec, scenario), "messages": MSG, "stream": True},
    )
    events = [e for e in resp.text.split("\n\n") if e]
    assert resp.status_code == 200
    assert events[-1] == "data: [DONE]" and '"error"' in events[-2]
    assert any('"content"' in e for e in events[:-2])
    with pytest.raises(openai.APIError):
        stream = await gw.sdk().chat.completions.create(
            model=model(spec, scenario), messages=MSG, stream=True
        )
        async for _ in stream:
            pass
    rows = await usage_rows(gw)
    assert {r["status"] for r in rows} == {"error"}
