"""GeminiProvider (google-genai over httpx2) against the fake Gemini API: answers, streams,
tools, images, embeddings, every error scenario, mid-stream failures and cancellation."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from forge.config import ProviderConfig
from forge.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    ForgeError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from forge.protocol.exchange import ProviderReply, StreamEnd, StreamHead
from serve.providers.gemini import GeminiProvider
from serve.providers.sdk_base import sse_data
from tests.fakes.gemini_upstream import SIGNATURE, FakeGemini
from tests.fakes.server import free_port

KEY = "gemini-test-key"
MSG = [{"role": "user", "content": "hello there"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "additionalProperties": False,
        },
    },
}
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
TEXT = "alpha bravo charlie delta echo foxtrot golf hotel"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    server = FakeGemini(api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture
async def make(fake, monkeypatch) -> AsyncIterator:
    monkeypatch.setenv("FAKE_GEMINI_KEY", KEY)
    made: list[GeminiProvider] = []

    def build(**overrides) -> GeminiProvider:
        cfg = {
            "name": "gem",
            "type": "gemini",
            "base_url": fake.url,
            "api_key_env": "FAKE_GEMINI_KEY",
            "timeout_s": 5.0,
            **overrides,
        }
        provider = GeminiProvider(ProviderConfig(**cfg))
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.close()


@pytest.fixture
def gem(make) -> GeminiProvider:
    return make()


def body(model: str = "gemini-fake", **extra) -> dict:
    return {"model": model, "messages": MSG, **extra}


async def complete(provider: GeminiProvider, request: dict) -> tuple[dict, ProviderReply]:
    reply = await provider.complete("chat/completions", request, "pub")
    return orjson.loads(reply.body), reply


async def collect(provider: GeminiProvider, request: dict, include_usage: bool = True):
    """(the head's event, later events as parsed JSON or "[DONE]", the StreamEnd)."""
    items = [i async for i in provider.stream("chat/completions", request, "pub", include_usage)]
    head, *middle, end = items
    assert isinstance(head, StreamHead) and isinstance(end, StreamEnd)
    events = [head.data, *middle]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") for e in events)
    parsed = [e[6:-2].decode() if e == b"data: [DONE]\n\n" else orjson.loads(e[6:]) for e in events]
    return parsed, end


def content_of(events: list) -> str:
    return "".join(
        c["delta"].get("content") or "" for e in events if isinstance(e, dict) for c in e["choices"]
    )


# ----------------------------------------------------------------------------- answers


async def test_text_goes_through_the_sdk_to_v1beta(gem, fake):
    data, reply = await complete(gem, body(temperature=0.2, max_tokens=50))
    assert data["model"] == "pub" and data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": TEXT}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert reply.usage.prompt_tokens == 12 and reply.usage.completion_tokens == 8
    assert not reply.usage.estimated and reply.upstream_ms > 0
    sent = fake.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-fake:generateContent"
    assert sent["headers"]["x-goog-api-key"] == KEY
    assert sent["headers"]["User-Agent"].startswith("google-genai-sdk/")
    assert sent["body"] == {
        "contents": [{"role": "user", "parts": [{"text": "hello there"}]}],
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 50},
    }


async def test_api_version_and_headers_come_from_the_config(make, fake):
    provider = make(api_version="v1", headers={"x-team": "search"})
    await complete(provider, body())
    sent = fake.requests[-1]
    assert sent["path"] == "/v1/models/gemini-fake:generateContent"
    assert sent["headers"]["x-team"] == "search"


async def test_max_tokens_and_stop_sequences(gem):
    data, _ = await complete(gem, body(max_tokens=3))
    assert data["choices"][0]["message"]["content"] == "alpha bravo charlie"
    assert data["choices"][0]["finish_reason"] == "length"
    data, _ = await complete(gem, body(stop=["delta"]))
    assert data["choices"][0]["message"]["content"] == "alpha bravo charlie"
    assert data["choices"][0]["finish_reason"] == "stop"


async def test_system_prompt_goes_in_system_instruction(gem, fake):
    messages = [{"role": "system", "content": "Be brief."}, *MSG]
    await complete(gem, {"model": "gemini-fake", "messages": messages})
    sent = fake.requests[-1]["body"]
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert [c["role"] for c in sent["contents"]] == ["user"]


async def test_image_data_url_and_https_url(gem, fake):
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://img.test/cat.png"}},
    ]
    data, _ = await complete(
        gem, {"model": "gemini-fake", "messages": [{"role": "user", "content": content}]}
    )
    assert data["choices"][0]["message"]["content"] == TEXT
    parts = fake.requests[-1]["body"]["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG.split(",", 1)[1]}}
    assert parts[2] == {
        "fileData": {"fileUri": "https://img.test/cat.png", "mimeType": "image/png"}
    }


async def test_n_candidates(gem, fake):
    data, reply = await complete(gem, body(n=2))
    assert fake.requests[-1]["body"]["generationConfig"] == {"candidateCount": 2}
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert data["choices"][0]["message"]["content"] == TEXT
    assert data["choices"][1]["message"]["content"] == "[1] " + TEXT
    assert reply.usage.completion_tokens == 16


async def test_json_schema_mode(gem, fake):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    data, _ = await complete(gem, body(response_format=response_format))
    assert orjson.loads(data["choices"][0]["message"]["content"]) == {"answer": TEXT}
    config = fake.requests[-1]["body"]["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseJsonSchema": schema}
    data, _ = await complete(gem, body(response_format={"type": "json_object"}))
    assert orjson.loads(data["choices"][0]["message"]["content"]) == {"answer": TEXT}


async def test_cached_and_thinking_usage(gem):
    data, reply = await complete(gem, body("cached"))
    assert data["usage"]["prompt_tokens_details"]["cached_tokens"] == 5
    assert reply.usage.prompt_tokens == 12
    data, reply = await complete(gem, body("thinking"))
    assert data["choices"][0]["message"]["content"] == TEXT  # the thought is not content
    assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == 7
    assert reply.usage.completion_tokens == 15 and data["usage"]["total_tokens"] == 27


async def test_blocked_prompt_and_safety_stop_are_content_filter(gem):
    data, reply = await complete(gem, body("blocked"))
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": "content_filter",
        }
    ]
    assert reply.usage.prompt_tokens == 12 and reply.usage.completion_tokens == 0
    data, _ = await complete(gem, body("safety"))
    assert data["choices"][0]["finish_reason"] == "content_filter"
    assert data["choices"][0]["message"]["content"] == ""


# ----------------------------------------------------------------------------- tools


async def test_tools_round_trip(gem, fake):
    data, _ = await complete(gem, body(tools=[WEATHER]))
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "weather", "arguments": '{"location":"Paris"}'}
    sent = fake.requests[-1]["body"]
    assert sent["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "description": "Weather in a city",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],
                }
            ]
        }
    ]
    follow_up = {
        "model": "gemini-fake",
        "tools": [WEATHER],
        "messages": [
            *MSG,
            choice["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
        ],
    }
    data, _ = await complete(gem, follow_up)
    assert data["choices"][0]["message"]["content"] == TEXT
    assert data["choices"][0]["finish_reason"] == "stop"
    contents = fake.requests[-1]["body"]["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "weather", "args": {"location": "Paris"}}}],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "weather", "response": {"output": "sunny"}}}],
    }


async def test_tool_choice_reaches_gemini(gem, fake):
    time_tool = {"type": "function", "function": {"name": "time"}}
    choice = {"type": "function", "function": {"name": "time"}}
    data, _ = await complete(gem, body(tools=[WEATHER, time_tool], tool_choice=choice))
    assert data["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "time"
    assert fake.requests[-1]["body"]["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["time"]}
    }
    data, _ = await complete(gem, body(tools=[WEATHER], tool_choice="none"))
    assert data["choices"][0]["message"]["content"] == TEXT


async def test_thought_signatures_survive_a_tool_loop(gem, fake):
    data, _ = await complete(gem, body("signed", tools=[WEATHER]))
    message = data["choices"][0]["message"]
    call = message["tool_calls"][0]
    turn = [*MSG, message, {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    data, _ = await complete(gem, {"model": "signed", "tools": [WEATHER], "messages": turn})
    assert data["choices"][0]["message"]["content"] == TEXT
    assert fake.requests[-1]["body"]["contents"][1]["parts"][0]["thoughtSignature"] == SIGNATURE
    plain_id = call["id"].split("__sig__")[0]
    stripped = {**message, "tool_calls": [{**call, "id": plain_id}]}
    turn = [*MSG, stripped, {"role": "tool", "tool_call_id": plain_id, "content": "sunny"}]
    with pytest.raises(InvalidRequest, match="thought_signature"):
        await complete(gem, {"model": "signed", "tools": [WEATHER], "messages": turn})


async def test_streamed_tool_call(gem):
    events, end = await collect(gem, body(tools=[WEATHER]))
    deltas = [c["delta"] for e in events[:-1] for c in e["choices"]]
    assert deltas[0]["role"] == "assistant"
    [call] = deltas[0]["tool_calls"]
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "weather", "arguments": '{"location":"Paris"}'}
    finishes = [c["finish_reason"] for e in events[:-1] for c in e["choices"]]
    assert finishes[-1] == "tool_calls"
    assert end.status == "ok" and end.usage.completion_tokens == 6


# ----------------------------------------------------------------------------- streams


async def test_stream_with_usage(gem, fake):
    events, end = await collect(gem, body(), include_usage=True)
    assert fake.requests[-1]["path"] == "/v1beta/models/gemini-fake:streamGenerateContent"
    assert fake.requests[-1]["query"] == {"alt": "sse"}
    *chunks, usage_chunk, done = events
    assert done == "[DONE]"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert content_of(chunks) == TEXT
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert {c["id"] for c in chunks} == {usage_chunk["id"]} and chunks[0]["model"] == "pub"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 8
    assert end.status == "ok" and end.http_status == 200 and end.upstream_ms > 0
    assert (end.usage.prompt_tokens, end.usage.completion_tokens) == (12, 8)
    assert not end.usage.estimated


async def test_stream_without_usage_still_records_it(gem):
    events, end = await collect(gem, body(), include_usage=False)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert content_of(chunks) == TEXT
    assert (end.usage.prompt_tokens, end.usage.completion_tokens) == (12, 8)
    assert not end.usage.estimated


async def test_stream_of_two_candidates(gem):
    events, end = await collect(gem, body(n=2))
    chunks = [e for e in events if isinstance(e, dict) and e["choices"]]
    text = {0: "", 1: ""}
    finish = {}
    for c in chunks:
        choice = c["choices"][0]
        text[choice["index"]] += choice["delta"].get("content") or ""
        if choice["finish_reason"]:
            finish[choice["index"]] = choice["finish_reason"]
    assert text == {0: TEXT, 1: "[1] " + TEXT} and finish == {0: "stop", 1: "stop"}
    assert end.status == "ok" and end.usage.completion_tokens == 16


async def test_stream_blocked_and_safety(gem):
    events, end = await collect(gem, body("blocked"))
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["choices"][0]["finish_reason"] == "content_filter"
    assert events[-1] == "[DONE]" and end.status == "ok" and end.usage.prompt_tokens == 12
    events, end = await collect(gem, body("safety"))
    chunks = [e for e in events if isinstance(e, dict) and e["choices"]]
    assert content_of(chunks) == "alpha bravo charlie delta echo foxtrot golf"
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert end.status == "ok"


async def test_midstream_error_becomes_error_event_then_done(gem):
    events, end = await collect(gem, body("midstream-error"))
    assert content_of(events[:-2]) == "alpha bravo"
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_unavailable" and "overloaded" in error["message"]
    assert end.status == "error" and end.http_status == 503
    assert end.error_code == "upstream_unavailable"
    assert end.usage.estimated and end.usage.completion_tokens == 2


async def test_truncated_stream_is_malformed(gem):
    events, end = await collect(gem, body("truncated"))
    assert content_of(events[:-2]) == "alpha bravo"
    assert events[-2]["error"]["code"] == "upstream_malformed_response"
    assert "gem" in events[-2]["error"]["message"] and events[-1] == "[DONE]"
    assert end.status == "error" and end.http_status == 502
    assert end.error_code == "upstream_malformed_response"


async def test_cancelling_the_stream_closes_the_upstream(gem, fake):
    before = fake.cancelled_streams
    stream = gem.stream("chat/completions", body("slow-stream"), "pub", False)
    assert isinstance(await anext(stream), StreamHead)
    await anext(stream)
    await stream.aclose()
    for _ in range(100):
        if fake.cancelled_streams > before:
            break
        await asyncio.sleep(0.02)
    assert fake.cancelled_streams == before + 1


# ----------------------------------------------------------------------------- embeddings


async def test_embeddings(gem, fake):
    request = {"model": "text-embedding-fake", "input": ["one", "two"], "dimensions": 4}
    reply = await gem.complete("embeddings", request, "pub-embed")
    data = orjson.loads(reply.body)
    assert data["object"] == "list" and data["model"] == "pub-embed"
    assert [d["index"] for d in data["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 4 for d in data["data"])
    assert data["data"][0]["embedding"] != data["data"][1]["embedding"]
    assert reply.usage.estimated and data["usage"]["prompt_tokens"] == reply.usage.prompt_tokens
    sent = fake.requests[-1]
    assert sent["path"] == "/v1beta/models/text-embedding-fake:batchEmbedContents"
    assert sent["body"]["requests"][1] == {
        "model": "models/text-embedding-fake",
        "content": {"parts": [{"text": "two"}]},
        "outputDimensionality": 4,
    }
    packed = await gem.complete("embeddings", {**request, "encoding_format": "base64"}, "p")
    vector = orjson.loads(packed.body)["data"][0]["embedding"]
    floats = struct.unpack("<4f", base64.b64decode(vector))
    assert floats == pytest.approx(data["data"][0]["embedding"], abs=1e-6)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("model", "cls", "status", "code"),
    [
        ("error-400", InvalidRequest, 400, None),
        ("error-401", AuthenticationFailed, 401, "provider_authentication_failed"),
        ("error-403", PermissionDenied, 403, "insufficient_permissions"),
        ("error-404", ModelNotFound, 404, "model_not_found"),
        ("error-429", UpstreamRateLimited, 429, "rate_limit_exceeded"),
        ("quota", UpstreamRateLimited, 429, "rate_limit_exceeded"),
        ("error-500", UpstreamError, 502, "upstream_error"),
        ("error-503", UpstreamUnavailable, 503, "upstream_unavailable"),
        ("error-504", UpstreamTimeout, 504, "upstream_timeout"),
        ("context-length", ContextLengthExceeded, 400, "context_length_exceeded"),
        ("malformed", UpstreamError, 502, "upstream_malformed_response"),
        ("drop", UpstreamError, 502, "upstream_unreachable"),
    ],
)
@pytest.mark.parametrize("streamed", [False, True])
async def test_error_scenarios(gem, model, cls, status, code, streamed):
    with pytest.raises(ForgeError) as err:
        if streamed:
            async for _ in gem.stream("chat/completions", body(model), "pub", True):
                pass
        else:
            await gem.complete("chat/completions", body(model), "pub")
    error = err.value
    assert type(error) is cls, error
    assert error.status_code == status and error.code == code and error.provider == "gem"
    if status == 429:
        assert error.retry_after == 11 and error.headers()["retry-after"] == "11"
    if code == "upstream_malformed_response":
        assert "'gem'" in error.message


async def test_wrong_key_is_the_providers_refusal(make, monkeypatch):
    monkeypatch.setenv("WRONG_GEMINI_KEY", "AIza-wrong")
    provider = make(api_key_env="WRONG_GEMINI_KEY")
    with pytest.raises(AuthenticationFailed) as err:
        await provider.complete("chat/completions", body(), "pub")
    assert err.value.code == "provider_authentication_failed"
    assert "AIza-wrong" not in err.value.message
    unset = make(api_key_env="NO_SUCH_GEMINI_KEY")
    with pytest.raises(AuthenticationFailed):
        await unset.complete("chat/completions", body(), "pub")


@pytest.mark.parametrize("streamed", [False, True])
async def test_hang_times_out(make, streamed):
    provider = make(timeout_s=0.5)
    with pytest.raises(UpstreamTimeout) as err:
        if streamed:
            async for _ in provider.stream("chat/completions", body("hang"), "pub", False):
                pass
        else:
            await provider.complete("chat/completions", body("hang"), "pub")
    assert err.value.status_code == 504 and err.value.code == "upstream_timeout"


async def test_connection_refused_is_502(make):
    provider = make(base_url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=1)
    with pytest.raises(UpstreamError) as err:
        await provider.complete("chat/completions", body(), "pub")
    assert err.value.status_code == 502 and err.value.code == "upstream_unreachable"
    with pytest.raises(UpstreamError) as err:
        async for _ in provider.stream("chat/completions", body(), "pub", False):
            pass
    assert err.value.code == "upstream_unreachable"


async def test_retries_follow_max_retries(make, fake):
    provider = make(max_retries=1)
    before = len(fake.requests)
    with pytest.raises(UpstreamUnavailable):
        await provider.complete("chat/completions", body("error-503"), "pub")
    assert len(fake.requests) == before + 2


async def test_unservable_requests_fail_before_any_upstream_call(gem, fake):
    before = len(fake.requests)
    with pytest.raises(InvalidRequest) as err:
        await gem.complete("completions", {"model": "gemini-fake", "prompt": "hi"}, "pub")
    assert err.value.param == "model" and err.value.code == "unsupported_parameter"
    with pytest.raises(InvalidRequest) as err:
        async for _ in gem.stream("embeddings", {"model": "e", "input": "x"}, "pub", False):
            pass
    assert err.value.param == "model"
    with pytest.raises(InvalidRequest) as err:
        await gem.complete("chat/completions", body(logit_bias={"1": 1}), "pub")
    assert err.value.param == "logit_bias"
    with pytest.raises(InvalidRequest) as err:
        await gem.complete("chat/completions", body("../etc"), "pub")
    assert err.value.param == "model"
    assert len(fake.requests) == before


async def test_ping_and_the_key_never_in_the_config(gem):
    assert await gem.ping() is True
    assert KEY not in repr(gem.cfg)


# ----------------------------------------------------------------------------- SSE framing


async def pieces_of(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_sse_lines_end_only_at_lf_or_crlf():
    separator = '{"text": "a\u2028b\u2029c\u0085d"}'.encode()
    raw = (
        b"data: "
        + separator
        + b"\r\n\r\n: comment\n\ndata:{}\n\ndata: [1]\r\ndata: [2]\r\n\r\ndata: 9"
    )
    for size in (1, 3, 7, len(raw)):
        pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
        out = [d async for d in sse_data(pieces_of(pieces))]
        assert out == [separator, b"{}", b"[1]\n[2]", b"9"], size
