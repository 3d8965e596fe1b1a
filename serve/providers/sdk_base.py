"""The shared body of providers reached through a Stainless-generated SDK (`openai`,
`anthropic`): the SDK's client owns connections, auth, retries and timeouts, and bodies go
out and come back as raw JSON (``cast_to=httpx2.Response``) so that no SDK objects are
built per request or chunk. A subclass says how to phrase the request, read the answer
and turn the upstream's stream into OpenAI chunks; everything else lives here once:
error mapping, usage accounting, the stream's head, error events and end.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

import aiohttp
import httpx2
import orjson

from forge.config import ProviderConfig
from forge.errors import ForgeError, UpstreamError, UpstreamRateLimited, UpstreamTimeout
from forge.protocol.exchange import (
    Endpoint,
    ProviderReply,
    StreamEnd,
    StreamHead,
    StreamItem,
    Usage,
)
from forge.protocol.sse import DONE, error_event, event
from forge.routing.provider_limits import UpstreamLimits, parse_rate_limit_headers
from forge.tracing_spans import trace_headers
from serve.providers.errors import status_error


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def usage_of(payload: dict[str, Any]) -> Usage | None:
    """OpenAI-shaped usage from a response or chunk, if it carries one."""
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A rough count (4 characters a token) for when the upstream never said."""
    return max(1, len(orjson.dumps(body.get("messages") or body.get("prompt") or "")) // 4)


DRAIN_TIMEOUT_S = 0.5


async def sse_data(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of a Server-Sent Events body (its bytes as they arrive),
    one per event, in order.

    Bytes, split here: decoding every piece to text and splitting it again into lines
    (httpx's ``aiter_text`` and ``aiter_lines``, two more generator layers) cost more per
    streamed chunk than parsing its JSON. Lines end only at LF or CRLF: line iterators
    built on ``str.splitlines`` also break at U+2028/U+2029, which providers may send raw
    inside JSON strings."""
    tail = b""
    data: list[bytes] = []
    async for piece in pieces:
        lines = (tail + piece).split(b"\n")
        tail = lines.pop()
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
    tail = tail.rstrip(b"\r")
    if tail.startswith(b"data:"):
        data.append(tail[6:] if tail[5:6] == b" " else tail[5:])
    if data:
        yield b"\n".join(data)


async def drain(lines: AsyncIterator[Any]) -> None:
    """Read what is left of a body after its last event (normally just its end), so that
    the connection returns to the pool instead of being closed: an unread remainder made
    every stream open a new upstream connection."""
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            async for _ in lines:
                pass
    except (TimeoutError, httpx2.HTTPError, aiohttp.ClientError):
        pass


def aiohttp_cause(exc: BaseException) -> aiohttp.ClientError | None:
    """The aiohttp error behind ``exc`` (the SDK's error wraps httpx2's, which wraps it),
    if the aiohttp transport raised it."""
    seen: BaseException | None = exc
    for _ in range(4):
        if isinstance(seen, aiohttp.ClientError):
            return seen
        if seen is None:
            return None
        seen = seen.__cause__ or seen.__context__
    return None


class MalformedUpstream(Exception):
    """The upstream broke its own protocol (bad JSON, truncated stream, odd event)."""


def parse_object(data: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedUpstream(f"{what} that is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedUpstream(f"{what} that is not a JSON object")
    return value


def estimated_usage(body: dict[str, Any], content_chunks: int) -> Usage:
    """Usage for a stream whose upstream never reported it: counted chunks, estimated prompt."""
    return Usage(
        prompt_tokens=estimate_prompt_tokens(body),
        completion_tokens=content_chunks,
        estimated=True,
    )


async def openai_stream(
    chunks: AsyncIterator[dict[str, Any]],
    *,
    body: dict[str, Any],
    include_usage: bool,
    t0: float,
    map_error: Callable[[BaseException], ForgeError],
    on_complete: Callable[[], Awaitable[None]] | None = None,
    limits: UpstreamLimits | None = None,
) -> AsyncIterator[StreamItem]:
    """The one stream protocol every provider follows, over its OpenAI-shaped chunks.

    Yields a ``StreamHead`` with the first chunk, then SSE-framed chunks, ``[DONE]`` and a
    ``StreamEnd``. The upstream's usage chunk reaches the client only if it asked
    (``include_usage``) but always the ``StreamEnd``. A failure before the head raises the
    mapped ``ForgeError`` (so the client gets a real HTTP status); after it, an error event
    and ``[DONE]`` end the stream. ``on_complete`` runs after a clean end (e.g. draining the
    body so that the connection is reused). ``limits``: the upstream's rate-limit headers,
    parsed, for the head. The caller closes its upstream response.
    """
    usage: Usage | None = None
    content_chunks = 0
    finish_reason: str | None = None
    head_sent = False
    try:
        async for chunk in chunks:
            chunk_usage = usage_of(chunk)
            if chunk_usage is not None:
                usage = chunk_usage
            choices = chunk.get("choices") or ()
            for choice in choices:
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
                    content_chunks += 1
                if choice.get("finish_reason") and not choice.get("index"):
                    finish_reason = choice["finish_reason"]
            if not include_usage:
                if not choices and chunk_usage is not None:
                    continue  # the usage chunk asked for on the platform's own account
                chunk.pop("usage", None)
            if head_sent:
                yield event(chunk)
            else:
                head_sent = True
                yield StreamHead(data=event(chunk), upstream_ms=ms_since(t0), limits=limits)
        if not head_sent:
            raise MalformedUpstream("an empty stream")
        yield DONE
        if on_complete is not None:
            await on_complete()
        ending = StreamEnd(
            usage=usage or estimated_usage(body, content_chunks),
            finish_reason=finish_reason,
            content_chunks=content_chunks,
        )
    except Exception as exc:
        error = map_error(exc)
        if not head_sent:
            raise error from None
        if error.code == "upstream_unreachable":  # it was reached: the stream broke off
            error = UpstreamError(
                f"The provider's stream broke off after {content_chunks} content chunks "
                f"({exc.__class__.__name__}); what was sent before is all there is.",
                code="upstream_stream_interrupted",
            )
        yield error_event(error.to_body())
        yield DONE
        ending = StreamEnd(
            usage=usage or estimated_usage(body, content_chunks),
            status="error",
            error_code=error.code,
            http_status=error.status_code,
        )
    ending.upstream_ms = ms_since(t0)
    yield ending


class SdkProvider(ABC):
    """The plain class behind a provider proxy; subclasses hold one pooled SDK client."""

    sdk: ModuleType  # the SDK module, for its error classes
    # Response headers that come with the provider's rate-limit headers: looked for
    # before parsing those, so that an upstream without them costs a lookup or two.
    limit_headers: tuple[str, ...] = ()

    def __init__(self, cfg: ProviderConfig, client: Any) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.client = client

    # ------------------------------------------------------------------ subclass hooks

    @abstractmethod
    def request(
        self, endpoint: Endpoint, body: dict[str, Any], stream: bool
    ) -> tuple[str, dict[str, Any]]:
        """The upstream path and body for an OpenAI-shaped request (raise 400s here)."""

    @abstractmethod
    def reply(
        self, endpoint: Endpoint, payload: dict[str, Any], public_model: str
    ) -> dict[str, Any]:
        """The OpenAI-shaped answer for the upstream's JSON answer."""

    @abstractmethod
    def chunks(
        self, events: AsyncIterator[bytes], public_model: str
    ) -> AsyncIterator[dict[str, Any]]:
        """OpenAI chunks (usage chunk last, if any) for the upstream's stream (its SSE
        events' data, from ``sse_data``). Returns only when the upstream finished
        properly; raises ``MalformedUpstream`` otherwise, and the mapped error for an
        in-stream error event."""

    # ------------------------------------------------------------------ shared behaviour

    def map_error(self, exc: BaseException) -> ForgeError:
        if isinstance(exc, ForgeError):
            return exc
        if isinstance(exc, MalformedUpstream):
            return UpstreamError(
                f"Provider {self.name!r} returned {exc}.",
                code="upstream_malformed_response",
                provider=self.name,
            )
        if isinstance(exc, self.sdk.APIStatusError):
            try:
                body = exc.response.json()
            except ValueError:
                body = getattr(exc, "body", None)
            error = status_error(self.name, exc.status_code, body, exc.response.headers)
            if isinstance(error, UpstreamRateLimited):
                error.limits = parse_rate_limit_headers(exc.response.headers, time.monotonic())
            return error
        cause = aiohttp_cause(exc)
        if cause is not None:
            return self.transport_error(cause)
        if isinstance(exc, self.sdk.APITimeoutError | httpx2.TimeoutException):
            return UpstreamTimeout(f"Provider {self.name!r} timed out.", provider=self.name)
        if isinstance(exc, self.sdk.APIConnectionError | httpx2.TransportError):
            return UpstreamError(
                f"Provider {self.name!r} could not be reached: {exc.__class__.__name__}.",
                code="upstream_unreachable",
                provider=self.name,
            )
        return UpstreamError(
            f"Provider {self.name!r} failed: {exc.__class__.__name__}: {exc}", provider=self.name
        )

    def transport_error(self, cause: aiohttp.ClientError) -> ForgeError:
        """A connection-level failure by what aiohttp saw: only its timeouts are timeouts
        (504); a refused, reset or dropped connection is an unreachable provider (502),
        which a stream that had started reports as broken off."""
        if isinstance(cause, aiohttp.ServerTimeoutError):
            return UpstreamTimeout(f"Provider {self.name!r} timed out.", provider=self.name)
        return UpstreamError(
            f"Provider {self.name!r} could not be reached: {cause.__class__.__name__}.",
            code="upstream_unreachable",
            provider=self.name,
        )

    def upstream_limits(self, headers: httpx2.Headers) -> UpstreamLimits | None:
        """The provider's rate-limit state from a response's headers, if they carry it."""
        for name in self.limit_headers:
            if name in headers:
                return parse_rate_limit_headers(headers, time.monotonic())
        return None

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The headers that carry ``api_key`` (a project's own key) instead of the
        client's; they replace the SDK's own auth header for this one request."""
        return {"Authorization": f"Bearer {api_key}"}

    async def _post(
        self, path: str, body: dict[str, Any], stream: bool, api_key: str | None
    ) -> httpx2.Response:
        headers = trace_headers()
        if api_key is not None:
            headers.update(self.auth_headers(api_key))
        options = {"headers": headers} if headers else {}
        try:
            return await self.client.post(
                path, body=body, cast_to=httpx2.Response, stream=stream, options=options
            )
        except Exception as exc:
            raise self.map_error(exc) from None

    async def complete(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        *,
        api_key: str | None = None,
    ) -> ProviderReply:
        path, upstream_body = self.request(endpoint, body, stream=False)
        t0 = time.perf_counter()
        response = await self._post(path, upstream_body, False, api_key)
        upstream_ms = ms_since(t0)
        try:
            payload = self.reply(endpoint, parse_object(response.content, "a body"), public_model)
        except MalformedUpstream as exc:
            raise self.map_error(exc) from None
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            malformed = MalformedUpstream(f"an unexpected body ({exc.__class__.__name__})")
            raise self.map_error(malformed) from None
        usage = usage_of(payload) or Usage(
            prompt_tokens=estimate_prompt_tokens(body), estimated=True
        )
        return ProviderReply(
            body=orjson.dumps(payload),
            usage=usage,
            upstream_ms=upstream_ms,
            limits=self.upstream_limits(response.headers),
        )

    async def stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        include_usage: bool,
        *,
        api_key: str | None = None,
    ) -> AsyncIterator[StreamItem]:
        path, upstream_body = self.request(endpoint, body, stream=True)
        t0 = time.perf_counter()
        response = await self._post(path, upstream_body, True, api_key)
        events = sse_data(response.aiter_bytes())
        try:
            async for item in openai_stream(
                self.chunks(events, public_model),
                body=body,
                include_usage=include_usage,
                t0=t0,
                map_error=self.map_error,
                on_complete=lambda: drain(events),
                limits=self.upstream_limits(response.headers),
            ):
                yield item
        finally:
            await response.aclose()

    def stream_error(self, message: str) -> UpstreamError:
        return UpstreamError(
            f"Provider {self.name!r} failed mid-stream: {message}",
            code="upstream_stream_error",
            provider=self.name,
        )

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        await self.client.close()
