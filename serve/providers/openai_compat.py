"""OpenAI, Azure OpenAI and any OpenAI-compatible server, through the official `openai` SDK.

The SDK's client owns the connection pool, auth headers, Azure's URL scheme, timeouts and
retries. Bodies go out and come back as raw JSON (``cast_to=httpx2.Response``): the
gateway forwards bytes, so building the SDK's pydantic objects per request and per chunk
would be pure cost. Each body is parsed once, with orjson, to read usage and to put the
public model name back.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import orjson

from forge.config import ProviderConfig
from forge.errors import ForgeError, UpstreamError, UpstreamTimeout
from serve.providers.base import (
    Endpoint,
    ProviderReply,
    StreamEnd,
    StreamHead,
    StreamItem,
    Usage,
)
from serve.providers.errors import status_error
from serve.providers.sse import DONE, error_event, event

_POOL = httpx2.Limits(max_connections=2000, max_keepalive_connections=200, keepalive_expiry=60)


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def build_client(cfg: ProviderConfig) -> openai.AsyncOpenAI:
    """One pooled SDK client for the provider; the key is read from the environment here."""
    api_key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
    timeout = httpx2.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s)
    http_client = httpx2.AsyncClient(limits=_POOL, timeout=timeout)
    common: dict[str, Any] = {
        "timeout": timeout,
        "max_retries": cfg.max_retries,
        "default_headers": cfg.headers or None,
        "http_client": http_client,
    }
    if cfg.type == "azure":
        return openai.AsyncAzureOpenAI(
            api_key=api_key or "unset",
            azure_endpoint=cfg.base_url,
            api_version=cfg.api_version,
            **common,
        )
    return openai.AsyncOpenAI(api_key=api_key or "unset", base_url=cfg.base_url, **common)


def _usage_of(payload: dict[str, Any]) -> Usage | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def _estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """A rough count (4 characters a token) for when the upstream never said."""
    return max(1, len(orjson.dumps(body.get("messages") or body.get("prompt") or "")) // 4)


class OpenAICompatProvider:
    """The plain class behind an OpenAI-family ProviderProxy deployment."""

    def __init__(self, cfg: ProviderConfig, client: openai.AsyncOpenAI | None = None) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.client = client or build_client(cfg)

    def _map(self, exc: BaseException) -> ForgeError:
        if isinstance(exc, ForgeError):
            return exc
        if isinstance(exc, openai.APIStatusError):
            try:
                body = exc.response.json()
            except ValueError:
                body = exc.body
            return status_error(self.name, exc.status_code, body, exc.response.headers)
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return UpstreamTimeout(f"Provider {self.name!r} timed out.", provider=self.name)
        if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
            return UpstreamError(
                f"Provider {self.name!r} could not be reached: {exc.__class__.__name__}.",
                code="upstream_unreachable",
                provider=self.name,
            )
        return UpstreamError(
            f"Provider {self.name!r} failed: {exc.__class__.__name__}: {exc}", provider=self.name
        )

    def _malformed(self, what: str) -> UpstreamError:
        return UpstreamError(
            f"Provider {self.name!r} returned {what}.",
            code="upstream_malformed_response",
            provider=self.name,
        )

    async def complete(
        self, endpoint: Endpoint, body: dict[str, Any], public_model: str
    ) -> ProviderReply:
        t0 = time.perf_counter()
        try:
            response = await self.client.post(
                "/" + endpoint, body=body, cast_to=httpx2.Response, stream=False
            )
        except Exception as exc:
            raise self._map(exc) from None
        upstream_ms = _ms_since(t0)
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self._malformed("a body that is not JSON") from None
        if not isinstance(payload, dict):
            raise self._malformed("a JSON body that is not an object")
        if "model" in payload:
            payload["model"] = public_model
        usage = _usage_of(payload)
        if usage is None:
            usage = Usage(prompt_tokens=_estimate_prompt_tokens(body), estimated=True)
        return ProviderReply(body=orjson.dumps(payload), usage=usage, upstream_ms=upstream_ms)

    async def stream(
        self, endpoint: Endpoint, body: dict[str, Any], public_model: str, include_usage: bool
    ) -> AsyncIterator[StreamItem]:
        t0 = time.perf_counter()
        if self.cfg.stream_usage:
            body = {
                **body,
                "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
            }
        try:
            response = await self.client.post(
                "/" + endpoint, body=body, cast_to=httpx2.Response, stream=True
            )
        except Exception as exc:
            raise self._map(exc) from None

        usage: Usage | None = None
        content_chunks = 0
        finished = False
        head_sent = False
        ending: StreamEnd | None = None
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, `event:` lines
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise self._malformed("a stream chunk that is not JSON") from None
                if not isinstance(chunk, dict):
                    raise self._malformed("a stream chunk that is not an object")
                if chunk.get("error"):
                    raise self._upstream_stream_error(chunk)
                chunk_usage = _usage_of(chunk)
                if chunk_usage is not None:
                    usage = chunk_usage
                choices = chunk.get("choices") or ()
                for choice in choices:
                    if choice.get("finish_reason"):
                        finished = True
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
                        content_chunks += 1
                if not choices and chunk_usage is not None and not include_usage:
                    continue  # the usage chunk we asked for on our own account
                if not include_usage and "usage" in chunk:
                    del chunk["usage"]
                if "model" in chunk:
                    chunk["model"] = public_model
                if head_sent:
                    yield event(chunk)
                else:
                    head_sent = True
                    yield StreamHead(data=event(chunk), upstream_ms=_ms_since(t0))
            else:
                if not finished:
                    raise self._malformed("a stream that ended before it finished")
            if not head_sent:
                raise self._malformed("an empty stream")
            yield DONE
            ending = StreamEnd(usage=usage or self._estimated(body, content_chunks))
        except Exception as exc:
            error = self._map(exc)
            if not head_sent:
                raise error from None
            yield error_event(error.to_body())
            yield DONE
            ending = StreamEnd(
                usage=usage or self._estimated(body, content_chunks),
                status="error",
                error_code=error.code,
                http_status=error.status_code,
            )
        finally:
            await response.aclose()
        ending.upstream_ms = _ms_since(t0)
        yield ending

    def _upstream_stream_error(self, chunk: dict[str, Any]) -> ForgeError:
        err = chunk.get("error")
        message = err.get("message") if isinstance(err, dict) else str(err)
        return UpstreamError(
            f"Provider {self.name!r} failed mid-stream: {message}",
            code="upstream_stream_error",
            provider=self.name,
        )

    @staticmethod
    def _estimated(body: dict[str, Any], content_chunks: int) -> Usage:
        return Usage(
            prompt_tokens=_estimate_prompt_tokens(body),
            completion_tokens=content_chunks,
            estimated=True,
        )

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        await self.client.close()
