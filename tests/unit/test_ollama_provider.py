"""OllamaProvider against the fake Ollama server: answers, streams, embeddings, errors."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from forge.config import ProviderConfig
from forge.errors import ForgeError, InvalidRequest, ModelNotFound, UpstreamError
from forge.protocol.exchange import StreamEnd, StreamHead
from serve.providers import ollama as ollama_provider
from serve.providers.ollama import OllamaProvider, root_url
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.server import free_port

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
MESSAGES = [{"role": "user", "content": "hi"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def fake_ollama() -> Iterator[FakeOllama]:
    server = FakeOllama().start()
    yield server
    server.stop()


def config(url: str, **extra: Any) -> ProviderConfig:
    return ProviderConfig(
        name="local", type="ollama", base_url=url, timeout_s=1, connect_timeout_s=1, **extra
    )


@pytest.fixture
async def provider(fake_ollama: FakeOllama) -> AsyncIterator[OllamaProvider]:
    p = OllamaProvider(config(fake_ollama.url))
    yield p
    await p.close()


def chat(model: str = "llama3.2", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **extra}


async def collect(agen: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in agen]


def events(items: list[Any]) -> list[Any]:
    """The SSE payloads of a stream's items (head included), ``[DONE]`` as a string."""
    out = []
    for item in items:
        data = item.data if isinstance(item, StreamHead) else item
        if isinstance(data, bytes):
            payload = data.removeprefix(b"data: ").strip()
            out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


# ----------------------------------------------------------------------------- answers


async def test_text_answer(provider, fake_ollama):
    reply = await provider.complete("chat/completions", chat(temperature=0.1), "pub")
    body = orjson.loads(reply.body)
    assert body["model"] == "pub" and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == (
        "alpha bravo charlie delta echo foxtrot golf hotel"
    )
    assert body["choices"][0]["finish_reason"] == "stop"
    assert reply.usage.completion_tokens == 8 and not reply.usage.estimated
    assert body["usage"]["prompt_tokens"] == reply.usage.prompt_tokens == 1
    sent = fake_ollama.requests[-1]
    assert sent["path"] == "/api/chat"
    assert sent["body"] == {
        "model": "llama3.2",
        "messages": MESSAGES,
        "stream": False,
        "options": {"temperature": 0.1},
    }
    assert "Authorization" not in sent["headers"]


async def test_max_tokens_gives_length(provider):
    reply = await provider.complete("chat/completions", chat(max_tokens=3), "pub")
    body = orjson.loads(reply.body)
    assert body["choices"][0]["message"]["content"] == "alpha bravo charlie"
    assert body["choices"][0]["finish_reason"] == "length"


async def test_tagged_model_and_v1_base_url(fake_ollama):
    p = OllamaProvider(config(fake_ollama.url + "/v1/"))
    try:
        reply = await p.complete("chat/completions", chat("llama3.2:latest"), "pub")
    finally:
        await p.close()
    assert orjson.loads(reply.body)["choices"][0]["message"]["content"]
    assert fake_ollama.requests[-1]["path"] == "/api/chat"


def test_root_url():
    assert root_url("http://h:11434") == "http://h:11434"
    assert root_url("http://h:11434/") == "http://h:11434"
    assert root_url("http://h:11434/v1") == "http://h:11434"
    assert root_url("http://h:11434/api/") == "http://h:11434"
    assert root_url("https://proxy.test/ollama") == "https://proxy.test/ollama"
    assert root_url(None) == "http://127.0.0.1:11434"


async def test_tools_round_trip(provider, fake_ollama):
    reply = await provider.complete("chat/completions", chat(tools=[WEATHER]), "pub")
    message = orjson.loads(reply.body)["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    (call,) = message["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "weather"
    assert orjson.loads(call["function"]["arguments"]) == {"location": "Paris"}
    assert fake_ollama.requests[-1]["body"]["tools"][0]["function"]["name"] == "weather"

    # The next turn carries the call (arguments a JSON string on OpenAI's side, an object
    # on Ollama's, which rejects strings) and the result, named after the call.
    follow_up = [
        *MESSAGES,
        message["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    reply = await provider.complete(
        "chat/completions", {"model": "llama3.2", "messages": follow_up}, "pub"
    )
    assert orjson.loads(reply.body)["choices"][0]["finish_reason"] == "stop"
    sent = fake_ollama.requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == {"location": "Paris"}
    assert sent[2]["tool_name"] == "weather" and sent[2]["content"] == "sunny"


async def test_tool_choice_none_sends_no_tools(provider, fake_ollama):
    reply = await provider.complete(
        "chat/completions", chat(tools=[WEATHER], tool_choice="none"), "pub"
    )
    assert orjson.loads(reply.body)["choices"][0]["finish_reason"] == "stop"
    assert "tools" not in fake_ollama.requests[-1]["body"]


async def test_image_goes_as_base64(provider, fake_ollama):
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ]
    body = {"model": "llava", "messages": [{"role": "user", "content": content}]}
    reply = await provider.complete("chat/completions", body, "pub")
    assert orjson.loads(reply.body)["choices"][0]["message"]["content"]
    assert fake_ollama.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "What is this?", "images": [PNG_B64]}
    ]


async def test_image_link_is_400_before_any_upstream_call(provider, fake_ollama):
    content = [{"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}]
    before = len(fake_ollama.requests)
    with pytest.raises(InvalidRequest) as err:
        await provider.complete(
            "chat/completions",
            {"model": "llava", "messages": [{"role": "user", "content": content}]},
            "p",
        )
    assert err.value.param == "messages[0].content[0]" and len(fake_ollama.requests) == before
    with pytest.raises(InvalidRequest):
        await collect(provider.stream("chat/completions", chat(n=2), "p", False))
    assert len(fake_ollama.requests) == before


@pytest.mark.parametrize(
    ("response_format", "sent"),
    [
        ({"type": "json_object"}, "json"),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "a",
                    "schema": {"type": "object", "properties": {"answer": {"type": "string"}}},
                },
            },
            {"type": "object", "properties": {"answer": {"type": "string"}}},
        ),
    ],
)
async def test_json_mode(provider, fake_ollama, response_format, sent):
    reply = await provider.complete(
        "chat/completions", chat(response_format=response_format), "pub"
    )
    content = orjson.loads(reply.body)["choices"][0]["message"]["content"]
    assert orjson.loads(content) == {"answer": "alpha"}
    assert fake_ollama.requests[-1]["body"]["format"] == sent


async def test_completions_endpoint(provider, fake_ollama):
    reply = await provider.complete(
        "completions", {"model": "llama3.2", "prompt": "Once", "max_tokens": 2}, "pub"
    )
    body = orjson.loads(reply.body)
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "alpha bravo"
    assert body["choices"][0]["finish_reason"] == "length"
    assert reply.usage.completion_tokens == 2
    assert fake_ollama.requests[-1]["path"] == "/api/generate"
    assert fake_ollama.requests[-1]["body"]["stream"] is False

    items = await collect(
        provider.stream("completions", {"model": "llama3.2", "prompt": "Once"}, "pub", True)
    )
    payloads = events(items)
    assert "".join(p["choices"][0]["text"] for p in payloads[:-2] if p["choices"]) == (
        "alpha bravo charlie delta echo foxtrot golf hotel"
    )
    assert payloads[-2]["usage"]["completion_tokens"] == 8 and payloads[-1] == "[DONE]"
    assert items[-1].usage.completion_tokens == 8


# ----------------------------------------------------------------------------- embeddings


async def test_embeddings_float_and_base64(provider, fake_ollama):
    body = {"model": "nomic-embed-text", "input": ["hello", "world"], "dimensions": 4}
    floats = orjson.loads((await provider.complete("embeddings", body, "emb")).body)
    assert floats["object"] == "list" and floats["model"] == "emb"
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 4 for d in floats["data"])
    assert floats["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    sent = fake_ollama.requests[-1]
    assert sent["path"] == "/api/embed"
    assert sent["body"] == {
        "model": "nomic-embed-text",
        "input": ["hello", "world"],
        "truncate": False,
        "dimensions": 4,
    }

    reply = await provider.complete("embeddings", {**body, "encoding_format": "base64"}, "emb")
    encoded = orjson.loads(reply.body)
    for as_float, as_b64 in zip(floats["data"], encoded["data"], strict=True):
        raw = base64.b64decode(as_b64["embedding"])
        assert list(struct.unpack("<4f", raw)) == as_float["embedding"]
    assert reply.usage.prompt_tokens == 2 and reply.usage.completion_tokens == 0
    assert "encoding_format" not in fake_ollama.requests[-1]["body"]


async def test_embeddings_single_string_and_over_long_input(provider):
    reply = await provider.complete("embeddings", {"model": "nomic-embed-text", "input": "x"}, "e")
    assert len(orjson.loads(reply.body)["data"]) == 1
    with pytest.raises(InvalidRequest) as err:
        await provider.complete(
            "embeddings", {"model": "nomic-embed-text", "input": "word " * 600}, "e"
        )
    assert "context length" in err.value.message
    with pytest.raises(InvalidRequest):
        await collect(
            provider.stream("embeddings", {"model": "nomic-embed-text", "input": "x"}, "e", False)
        )


# ----------------------------------------------------------------------------- streams


async def test_stream_without_include_usage(provider, fake_ollama):
    items = await collect(provider.stream("chat/completions", chat(), "pub", False))
    assert isinstance(items[0], StreamHead) and isinstance(items[-1], StreamEnd)
    payloads = events(items)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "alpha bravo charlie delta echo foxtrot golf hotel"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    end = items[-1]
    assert end.status == "ok" and end.http_status == 200
    assert end.usage.completion_tokens == 8 and not end.usage.estimated  # recorded anyway
    assert fake_ollama.requests[-1]["body"]["stream"] is True


async def test_stream_with_include_usage(provider):
    items = await collect(provider.stream("chat/completions", chat(), "pub", True))
    payloads = events(items)
    usage_chunk = payloads[-2]
    assert usage_chunk["choices"] == [] and payloads[-1] == "[DONE]"
    assert usage_chunk["usage"] == {"prompt_tokens": 1, "completion_tokens": 8, "total_tokens": 9}
    assert items[-1].usage.prompt_tokens == 1 and items[-1].upstream_ms > 0


async def test_finished_streams_give_their_connection_back(provider, fake_ollama):
    for _ in range(3):
        await collect(provider.stream("chat/completions", chat(), "pub", False))
    await provider.complete("chat/completions", chat(), "pub")
    assert len({r["peer"] for r in fake_ollama.requests[-4:]}) == 1


async def test_stream_tool_call(provider):
    items = await collect(provider.stream("chat/completions", chat(tools=[WEATHER]), "pub", False))
    chunks = events(items)[:-1]
    calls = [c for ch in chunks for c in ch["choices"][0]["delta"].get("tool_calls", ())]
    assert len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["id"].startswith("call_")
    assert orjson.loads(calls[0]["function"]["arguments"]) == {"location": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_midstream_error_is_an_error_event_then_done(provider):
    items = await collect(provider.stream("chat/completions", chat("midstream-error"), "p", True))
    payloads = events(items)
    assert isinstance(items[0], StreamHead)
    assert [p["choices"][0]["delta"].get("content") for p in payloads[:2]] == ["alpha", " bravo"]
    error = payloads[-2]["error"]
    assert error["code"] == "upstream_stream_error" and "unexpected EOF" in error["message"]
    assert payloads[-1] == "[DONE]"
    end = items[-1]
    assert end.status == "error" and end.error_code == "upstream_stream_error"
    assert end.http_status == 502 and end.usage.estimated and end.usage.completion_tokens == 2


async def test_truncated_stream_is_malformed(provider):
    items = await collect(provider.stream("chat/completions", chat("truncated"), "p", False))
    payloads = events(items)
    assert payloads[-2]["error"]["code"] == "upstream_malformed_response"
    assert payloads[-1] == "[DONE]"
    assert items[-1].status == "error" and items[-1].http_status == 502


async def test_connection_cut_mid_stream_is_an_error_event(provider):
    items = await collect(provider.stream("chat/completions", chat("midstream-drop"), "p", False))
    assert isinstance(items[0], StreamHead) and events(items)[-1] == "[DONE]"
    assert items[-1].status == "error" and items[-1].http_status == 502


async def test_cancelling_the_stream_closes_the_upstream(provider, fake_ollama):
    before = fake_ollama.cancelled_streams
    agen = provider.stream("chat/completions", chat("slow-stream"), "p", False)
    head = await agen.__anext__()
    assert isinstance(head, StreamHead)
    await agen.__anext__()
    await agen.aclose()
    for _ in range(100):
        if fake_ollama.cancelled_streams > before:
            break
        await asyncio.sleep(0.02)
    assert fake_ollama.cancelled_streams == before + 1


# ----------------------------------------------------------------------------- errors


async def test_model_not_pulled_is_404_saying_pull_it(provider):
    for call in (
        provider.complete("chat/completions", chat("mistral"), "pub"),
        collect(provider.stream("chat/completions", chat("mistral"), "pub", True)),
        provider.complete("embeddings", {"model": "mistral", "input": "x"}, "pub"),
    ):
        with pytest.raises(ModelNotFound) as err:
            await call
        assert err.value.status_code == 404 and err.value.code == "model_not_found"
        assert err.value.param == "model"
        assert "'mistral'" in err.value.message and "pulled" in err.value.message


SCENARIOS = [
    ("error-400", 400, None),
    ("error-401", 401, "provider_authentication_failed"),
    ("error-404", 404, "model_not_found"),
    ("error-429", 429, "rate_limit_exceeded"),
    ("error-500", 502, "upstream_error"),
    ("error-502", 502, "upstream_error"),
    ("error-503", 503, "upstream_unavailable"),
    ("malformed", 502, "upstream_malformed_response"),
    ("hang", 504, "upstream_timeout"),
    ("drop", 502, "upstream_unreachable"),
]


@pytest.mark.parametrize(("model", "status", "code"), SCENARIOS)
async def test_error_scenarios_complete(provider, model, status, code):
    with pytest.raises(ForgeError) as err:
        await provider.complete("chat/completions", chat(model), "pub")
    assert (err.value.status_code, err.value.code) == (status, code)
    assert err.value.provider == "local"


@pytest.mark.parametrize(("model", "status", "code"), SCENARIOS)
async def test_error_scenarios_stream_raise_before_the_head(provider, model, status, code):
    with pytest.raises(ForgeError) as err:
        await collect(provider.stream("chat/completions", chat(model), "pub", True))
    assert (err.value.status_code, err.value.code) == (status, code)


async def test_malformed_answer_body(provider):
    with pytest.raises(UpstreamError) as err:
        await provider.complete("completions", {"model": "malformed", "prompt": "x"}, "pub")
    assert err.value.code == "upstream_malformed_response"


async def test_connection_refused_is_502_and_ping_false():
    p = OllamaProvider(config(f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(UpstreamError) as err:
            await p.complete("chat/completions", chat(), "pub")
        assert err.value.status_code == 502 and err.value.code == "upstream_unreachable"
        with pytest.raises(UpstreamError):
            await collect(p.stream("chat/completions", chat(), "pub", False))
        assert await p.ping() is False
    finally:
        await p.close()


async def test_not_an_ollama_server_is_502(fake_ollama):
    p = OllamaProvider(config(fake_ollama.url + "/elsewhere"))
    try:
        with pytest.raises(UpstreamError) as err:
            await p.complete("chat/completions", chat(), "pub")
    finally:
        await p.close()
    assert err.value.status_code == 502 and "Ollama" in err.value.message


async def test_ping(provider):
    assert await provider.ping() is True


async def test_bearer_key_and_headers_are_sent_but_never_shown(fake_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_PROXY_KEY", "sk-ollama-secret")
    p = OllamaProvider(
        config(fake_ollama.url, api_key_env="OLLAMA_PROXY_KEY", headers={"X-Team": "a"})
    )
    try:
        await p.complete("chat/completions", chat(), "pub")
        sent = fake_ollama.requests[-1]["headers"]
        assert sent["Authorization"] == "Bearer sk-ollama-secret" and sent["X-Team"] == "a"
        with pytest.raises(ForgeError) as err:
            await p.complete("chat/completions", chat("error-401"), "pub")
    finally:
        await p.close()
    assert "sk-ollama-secret" not in err.value.message


async def test_retries_busy_answers(fake_ollama, monkeypatch):
    monkeypatch.setattr(ollama_provider, "MAX_BACKOFF_S", 0.01)
    p = OllamaProvider(config(fake_ollama.url, max_retries=2))
    try:
        before = len(fake_ollama.requests)
        with pytest.raises(ForgeError) as err:
            await p.complete("chat/completions", chat("error-503"), "pub")
        assert err.value.status_code == 503 and len(fake_ollama.requests) == before + 3
        before = len(fake_ollama.requests)
        with pytest.raises(InvalidRequest):
            await p.complete("chat/completions", chat("error-400"), "pub")
        assert len(fake_ollama.requests) == before + 1  # a 400 is final
    finally:
        await p.close()
