"""Ollama's native API (`/api/chat`, `/api/generate`, `/api/embed`) over one pooled `httpx2`
client. There is no SDK here, so this class does what ``SdkProvider`` and the SDK do
between them, with the same semantics: error mapping, usage accounting, the stream's
head, error events and end; translation lives in ``forge.translate.ollama``.

Ollama streams NDJSON (one JSON object a line, the last with ``"done": true``); an
``{"error": ...}`` line can come at any point after the 200 status. A stream that ends
without its done line is truncated (malformed). ``cfg.max_retries`` retries connection
failures and HTTP 429/502/503/504 (Ollama's "server busy") before any answer.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
import orjson

from forge.config import ProviderConfig
from forge.errors import ForgeError, ModelNotFound, UpstreamError, UpstreamTimeout
from forge.protocol.exchange import Endpoint, ProviderReply, StreamItem, Usage
from forge.tracing_spans import trace_headers
from forge.translate import ollama as tr
from forge.translate.common import unsupported
from serve.providers.errors import retry_after_seconds, status_error
from serve.providers.openai_compat import http_client
from serve.providers.sdk_base import (
    MalformedUpstream,
    estimate_prompt_tokens,
    ms_since,
    openai_stream,
    parse_object,
    usage_of,
)

DEFAULT_BASE_URL = "http://127.0.0.1:11434"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_BACKOFF_S = 8.0
DRAIN_TIMEOUT_S = 0.5


def root_url(base_url: str | None) -> str:
    """The server root: Ollama's paths start with ``/api``, so a configured ``/v1`` (its
    OpenAI layer) or ``/api`` suffix is dropped."""
    url = (base_url or DEFAULT_BASE_URL).rstrip("/")
    for suffix in ("/v1", "/api"):
        url = url.removesuffix(suffix)
    return url


def _error_text(body: Any) -> str | None:
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        return body["error"]
    return None


class OllamaProvider:
    """The plain class behind an Ollama provider proxy."""

    def __init__(self, cfg: ProviderConfig, client: httpx2.AsyncClient | None = None) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.client = client or http_client(cfg)
        self.base_url = root_url(cfg.base_url)
        headers = {"Content-Type": "application/json", **cfg.headers}
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if key:  # Ollama itself has no auth; a proxy in front of it may
            headers["Authorization"] = f"Bearer {key}"
        self._headers = headers

    # ------------------------------------------------------------------ translation

    def request(
        self, endpoint: Endpoint, body: dict[str, Any], stream: bool
    ) -> tuple[str, dict[str, Any]]:
        """The Ollama path and body for an OpenAI-shaped request (400s raised here)."""
        model = body["model"]
        if endpoint == "chat/completions":
            return "/api/chat", tr.to_ollama_chat(body, model, stream)
        if endpoint == "completions":
            return "/api/generate", tr.to_ollama_generate(body, model, stream)
        if endpoint == "embeddings":
            if stream:
                raise unsupported(tr.PROVIDER, "stream", "embeddings are not streamed")
            return "/api/embed", tr.to_ollama_embed(body, model)
        raise unsupported(tr.PROVIDER, "model", f"it does not serve /v1/{endpoint}")

    def reply(
        self, endpoint: Endpoint, payload: dict[str, Any], body: dict[str, Any], public_model: str
    ) -> dict[str, Any]:
        error = _error_text(payload)
        if error is not None:
            raise UpstreamError(f"Provider {self.name!r} failed: {error}", provider=self.name)
        if endpoint == "chat/completions":
            return tr.from_ollama_chat(payload, public_model)
        if endpoint == "completions":
            return tr.from_ollama_generate(payload, public_model)
        return tr.from_ollama_embed(payload, public_model, body.get("encoding_format"))

    async def chunks(
        self, endpoint: Endpoint, response: httpx2.Response, public_model: str
    ) -> AsyncIterator[dict[str, Any]]:
        """OpenAI chunks, usage chunk last, for Ollama's NDJSON stream. Returns only after
        the done line; raises ``MalformedUpstream`` otherwise, and the mapped error for an
        ``{"error": ...}`` line."""
        translator: tr.OllamaChatStreamToOpenAI | tr.OllamaGenerateStreamToOpenAI
        if endpoint == "chat/completions":
            translator = tr.OllamaChatStreamToOpenAI(public_model)
        else:
            translator = tr.OllamaGenerateStreamToOpenAI(public_model)
        lines = response.aiter_lines()
        async for line in lines:
            if not line or line.isspace():
                continue
            data = parse_object(line, "a stream line")
            if "error" in data:
                raise self.stream_error(_error_text(data) or orjson.dumps(data["error"]).decode())
            try:
                chunks = translator.feed(data)
            except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
                raise MalformedUpstream(
                    f"an unexpected stream line ({exc.__class__.__name__})"
                ) from None
            for chunk in chunks:
                yield chunk
            if translator.finished:
                break
        else:
            raise MalformedUpstream("a stream that ended before its done line")
        yield translator.usage_chunk()
        # Read the body's (empty) end, so that the connection goes back to the pool
        # instead of being dropped; a server that keeps it open only loses that.
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                async for _ in lines:
                    pass
        except (TimeoutError, httpx2.HTTPError):
            pass

    # ------------------------------------------------------------------ errors

    def map_error(self, exc: BaseException) -> ForgeError:
        if isinstance(exc, ForgeError):
            return exc
        if isinstance(exc, MalformedUpstream):
            return UpstreamError(
                f"Provider {self.name!r} returned {exc}.",
                code="upstream_malformed_response",
                provider=self.name,
            )
        if isinstance(exc, httpx2.TimeoutException):
            return UpstreamTimeout(f"Provider {self.name!r} timed out.", provider=self.name)
        if isinstance(exc, httpx2.TransportError):
            return UpstreamError(
                f"Provider {self.name!r} could not be reached: {exc.__class__.__name__}.",
                code="upstream_unreachable",
                provider=self.name,
            )
        return UpstreamError(
            f"Provider {self.name!r} failed: {exc.__class__.__name__}: {exc}", provider=self.name
        )

    def _status_error(
        self, status: int, raw: bytes, headers: Mapping[str, str], model: str
    ) -> ForgeError:
        """The platform error for Ollama's non-2xx answer (``{"error": "text"}``)."""
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        message = _error_text(body)
        if status == 404 and message is None:
            # Not Ollama's JSON: the path itself is unknown (not Ollama, or too old).
            return UpstreamError(
                f"Provider {self.name!r} does not serve Ollama's API here (HTTP 404); "
                "check base_url and the Ollama version.",
                provider=self.name,
            )
        if status == 404 and "not found" in message.lower():
            return ModelNotFound(
                f"Model {model!r} is not available on provider {self.name!r}: it must be "
                f"pulled first (`ollama pull {model}`). Ollama said: {message}",
                param="model",
                provider=self.name,
            )
        return status_error(self.name, status, body, headers)

    def stream_error(self, message: str) -> UpstreamError:
        return UpstreamError(
            f"Provider {self.name!r} failed mid-stream: {message}",
            code="upstream_stream_error",
            provider=self.name,
        )

    # ------------------------------------------------------------------ transport

    @staticmethod
    def _backoff(attempt: int, headers: Mapping[str, str] | None = None) -> float:
        wait = retry_after_seconds(headers) if headers is not None else None
        if wait is None:
            wait = 0.5 * 2**attempt
        return min(max(wait, 0.0), MAX_BACKOFF_S)

    async def _send(
        self, path: str, payload: dict[str, Any], model: str, stream: bool, api_key: str | None
    ) -> httpx2.Response:
        """POST and return a 2xx response (streamed or read); raises ``ForgeError``.
        ``api_key``: a project's own key (a bearer token), instead of the platform's."""
        headers = self._headers
        traced = trace_headers()
        if api_key is not None or traced:
            headers = {**headers, **traced}
            if api_key is not None:
                headers["Authorization"] = f"Bearer {api_key}"
        request = self.client.build_request(
            "POST", self.base_url + path, content=orjson.dumps(payload), headers=headers
        )
        attempts = self.cfg.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self.client.send(request, stream=stream)
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                if last:
                    raise self.map_error(exc) from None
                await asyncio.sleep(self._backoff(attempt))
                continue
            except Exception as exc:
                raise self.map_error(exc) from None
            if response.status_code < 400:
                return response
            try:
                raw = await response.aread()
            except Exception as exc:
                raise self.map_error(exc) from None
            finally:
                await response.aclose()
            if last or response.status_code not in RETRY_STATUSES:
                raise self._status_error(response.status_code, raw, response.headers, model)
            await asyncio.sleep(self._backoff(attempt, response.headers))
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ provider interface

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
        response = await self._send(path, upstream_body, str(body["model"]), False, api_key)
        upstream_ms = ms_since(t0)
        try:
            payload = self.reply(
                endpoint, parse_object(response.content, "a body"), body, public_model
            )
        except MalformedUpstream as exc:
            raise self.map_error(exc) from None
        except (KeyError, TypeError, AttributeError, IndexError, ValueError, struct.error) as exc:
            malformed = MalformedUpstream(f"an unexpected body ({exc.__class__.__name__})")
            raise self.map_error(malformed) from None
        usage = usage_of(payload) or Usage(
            prompt_tokens=estimate_prompt_tokens(body), estimated=True
        )
        return ProviderReply(body=orjson.dumps(payload), usage=usage, upstream_ms=upstream_ms)

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
        response = await self._send(path, upstream_body, str(body["model"]), True, api_key)
        chunks = self.chunks(endpoint, response, public_model)
        try:
            async for item in openai_stream(
                chunks,
                body=body,
                include_usage=include_usage,
                t0=t0,
                map_error=self.map_error,
            ):
                yield item
        finally:
            # Also on cancellation (the consumer closed this generator): closing the
            # response drops the connection, which is how Ollama learns to stop.
            await chunks.aclose()
            await response.aclose()

    async def ping(self) -> bool:
        """Whether the server answers ``GET /api/version``."""
        try:
            response = await self.client.get(
                self.base_url + "/api/version",
                headers=self._headers,
                timeout=httpx2.Timeout(self.cfg.connect_timeout_s),
            )
        except Exception:
            return False
        return response.status_code == 200

    async def close(self) -> None:
        await self.client.aclose()
