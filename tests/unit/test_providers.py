"""OpenAI-family provider classes against the fake upstream, and the error mapping."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time

import pytest

from forge.config import ProviderConfig
from forge.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from forge.protocol.exchange import StreamEnd, StreamHead
from serve.providers.errors import retry_after_seconds, status_error
from serve.providers.openai_compat import OpenAICompatProvider

BODY = {"messages": [{"role": "user", "content": "hi"}]}


async def test_azure_uses_deployment_urls_api_version_and_api_key_header(fake_openai):
    cfg = ProviderConfig(
        name="az",
        type="azure",
        base_url=fake_openai.url,
        api_version="2024-10-21",
        api_key_env="FAKE_UPSTREAM_KEY",
    )
    provider = OpenAICompatProvider(cfg)
    try:
        reply = await provider.complete("chat/completions", {**BODY, "model": "my-gpt"}, "pub")
    finally:
        await provider.close()
    sent = fake_openai.requests[-1]
    assert sent["path"] == "/openai/deployments/my-gpt/chat/completions"
    assert sent["query"]["api-version"] == "2024-10-21"
    assert sent["headers"]["api-key"] == "sk-upstream-test"
    assert reply.usage.completion_tokens == 8 and b'"model":"pub"' in reply.body


async def test_wrong_upstream_key_is_reported_as_the_providers_refusal(fake_openai, monkeypatch):
    monkeypatch.setenv("WRONG_KEY", "sk-nope")
    cfg = ProviderConfig(
        name="up", type="openai_compatible", base_url=fake_openai.base_url, api_key_env="WRONG_KEY"
    )
    provider = OpenAICompatProvider(cfg)
    try:
        with pytest.raises(AuthenticationFailed) as err:
            await provider.complete("chat/completions", {**BODY, "model": "gpt-fake"}, "pub")
    finally:
        await provider.close()
    assert err.value.code == "provider_authentication_failed"
    assert "sk-nope" not in err.value.message  # secrets never end up in errors


async def test_connection_refused_is_502(fake_openai):
    from tests.fakes.server import free_port

    cfg = ProviderConfig(
        name="gone",
        type="openai_compatible",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        connect_timeout_s=1,
    )
    provider = OpenAICompatProvider(cfg)
    try:
        with pytest.raises(UpstreamError) as err:
            await provider.complete("chat/completions", {**BODY, "model": "m"}, "pub")
        with pytest.raises(UpstreamError):
            async for _ in provider.stream("chat/completions", {**BODY, "model": "m"}, "p", False):
                pass
    finally:
        await provider.close()
    assert err.value.status_code == 502 and err.value.code == "upstream_unreachable"


@pytest.mark.parametrize(
    ("status", "cls", "http"),
    [
        (400, InvalidRequest, 400),
        (422, InvalidRequest, 400),
        (401, AuthenticationFailed, 401),
        (404, ModelNotFound, 404),
        (429, UpstreamRateLimited, 429),
        (500, UpstreamError, 502),
        (502, UpstreamError, 502),
        (503, UpstreamUnavailable, 503),
        (529, UpstreamUnavailable, 503),
        (418, InvalidRequest, 400),
    ],
)
def test_status_mapping(status, cls, http):
    body = {"error": {"message": "boom", "type": "x", "param": "messages", "code": "bad"}}
    error = status_error("p", status, body, {"retry-after": "3"})
    assert type(error) is cls and error.status_code == http and error.provider == "p"
    assert "boom" in error.message


@pytest.mark.parametrize("body", [None, "text", [1, 2], {"error": "flat"}, {"message": "m"}])
def test_status_mapping_survives_odd_error_bodies(body):
    error = status_error("p", 500, body, {})
    assert error.status_code == 502 and error.message


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "7"}) == 7
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_seconds({"retry-after": future}) <= 31
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert RateLimited("x", retry_after=2.4).headers() == {
        "retry-after": "3",  # rounded up: retrying sooner would be refused again
        "retry-after-ms": "2400",
    }


class RawUpstream:
    """A loopback server speaking just enough HTTP/1.1 to misbehave at a chosen point:
    ``hang`` never answers; ``drop`` starts an SSE stream, sends one chunk, and closes the
    connection without finishing it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        if self.mode == "hang":
            await asyncio.sleep(30)
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        chunk["choices"] = [{"index": 0, "delta": {"content": "hel"}, "finish_reason": None}]
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # a reset, mid-stream


async def test_an_upstream_that_never_answers_is_a_504_timeout():
    async with RawUpstream("hang") as url:
        cfg = ProviderConfig(name="slow", type="openai_compatible", base_url=url, timeout_s=0.3)
        provider = OpenAICompatProvider(cfg)
        try:
            with pytest.raises(UpstreamTimeout) as err:
                await provider.complete("chat/completions", {**BODY, "model": "m"}, "pub")
        finally:
            await provider.close()
    assert err.value.status_code == 504


async def test_a_stream_cut_mid_way_reports_a_broken_stream_not_a_timeout():
    async with RawUpstream("drop") as url:
        cfg = ProviderConfig(name="cut", type="openai_compatible", base_url=url)
        provider = OpenAICompatProvider(cfg)
        items = []
        try:
            body = {**BODY, "model": "m"}
            async for item in provider.stream("chat/completions", body, "p", True):
                items.append(item)
        finally:
            await provider.close()
    assert isinstance(items[0], StreamHead)
    end = items[-1]
    assert isinstance(end, StreamEnd) and end.status == "error"
    assert end.error_code == "upstream_stream_interrupted" and end.http_status == 502
    events = b"".join(i for i in items if isinstance(i, bytes))
    assert b"broke off after 1 content chunks" in events
