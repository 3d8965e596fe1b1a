"""Google Gemini (the Gemini Developer API) through the official `google-genai` SDK.

The SDK's client owns the endpoint, the ``x-goog-api-key`` and version headers, retries and
the URL layout; bodies go out already translated (``forge.translate.gemini``) and come back
as raw JSON, so no SDK objects are built per request or chunk. google-genai is not a
Stainless SDK and has no public raw-response call: its typed ``generate_content`` builds
pydantic models, and ``async_request_streamed`` parses each chunk with ``json``, dumps it
again and wraps it in a pydantic object. So this module uses three of its private pieces,
all in ``_send``: ``client.aio._api_client``, ``_build_request`` (URL, headers) and
``_async_request`` (retries, status check into ``APIError``, streamed raw response).

HTTP goes through a pooled ``httpx2`` client handed to the SDK, so the stream is an
``httpx2.Response`` that this module reads and closes itself (closing it is how a consumer
that goes away cancels the upstream). The API version defaults to ``v1beta``: that is
where ``systemInstruction``, function calling with ``parametersJsonSchema``,
``responseJsonSchema`` and thought signatures are documented (the SDK's own default is
``v1``); a provider's ``api_version`` overrides it.

Semantics follow ``sdk_base.SdkProvider``: errors before the stream's head raise
``ForgeError``; later ones become an error event, ``data: [DONE]`` and a ``StreamEnd`` with
status ``error``; usage is always recorded, and the usage chunk (``choices: []``) is
forwarded only when the client asked for it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
import orjson
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from forge.config import ProviderConfig
from forge.errors import (
    ContextLengthExceeded,
    ForgeError,
    UpstreamError,
    UpstreamTimeout,
)
from forge.protocol.exchange import Endpoint, ProviderReply, StreamItem, Usage
from forge.tracing_spans import trace_headers
from forge.translate import gemini as tr
from forge.translate.common import unsupported
from serve.providers.errors import status_error
from serve.providers.sdk_base import (
    MalformedUpstream,
    estimate_prompt_tokens,
    ms_since,
    openai_stream,
    parse_object,
    sse_data,
    usage_of,
)

DEFAULT_API_VERSION = "v1beta"
POOL = httpx2.Limits(max_connections=2000, max_keepalive_connections=200, keepalive_expiry=60)
BAD_SHAPE = (ValueError, KeyError, TypeError, AttributeError, IndexError)
CONTEXT_TOO_LONG = re.compile(r"input token count .* exceeds", re.IGNORECASE)
DURATION = re.compile(r"^\s*([0-9.]+)s\s*$")


class _PooledClient(httpx2.AsyncClient):
    """httpx2 client whose own timeouts (a separate connect timeout) win over the single
    per-request timeout google-genai passes with every request."""

    def build_request(self, method: str, url: Any, **kwargs: Any) -> httpx2.Request:
        kwargs.pop("timeout", None)
        return super().build_request(method, url, **kwargs)


def build_client(cfg: ProviderConfig) -> genai.Client:
    """A google-genai client for one provider entry; the key is read here, from the
    environment, and never logged."""
    key = (os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else "") or "unset"
    http = _PooledClient(
        limits=POOL, timeout=httpx2.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s)
    )
    options = genai_types.HttpOptions(
        base_url=cfg.base_url,  # None: the SDK's default, generativelanguage.googleapis.com
        api_version=cfg.api_version or DEFAULT_API_VERSION,
        timeout=int(cfg.timeout_s * 1000),
        headers=cfg.headers or None,
        # Set even for no retries: it also turns off the SDK's own retry of failed connects.
        retry_options=genai_types.HttpRetryOptions(attempts=cfg.max_retries + 1),
        httpx_async_client=http,
    )
    return genai.Client(vertexai=False, api_key=key, http_options=options)


def _retry_delay(details: Any) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "11s"``)."""
    for detail in details or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _reasons(details: Any) -> set[str]:
    return {str(d.get("reason")) for d in details or () if isinstance(d, dict) and d.get("reason")}


class GeminiProvider:
    """The plain class behind a Gemini provider proxy; holds one pooled google-genai client."""

    def __init__(self, cfg: ProviderConfig, client: genai.Client | None = None) -> None:
        self.name = cfg.name
        self.cfg = cfg
        self.client = client or build_client(cfg)
        self._api = self.client.aio._api_client
        self._http = self._api._http_options.httpx_async_client
        if not isinstance(self._http, httpx2.AsyncClient):
            raise TypeError("GeminiProvider needs a genai.Client built with an httpx2 client")

    # ------------------------------------------------------------------ requests

    def _request(
        self, endpoint: Endpoint, body: dict[str, Any], stream: bool
    ) -> tuple[str, dict[str, Any]]:
        """The path (under the API version) and the Gemini body for an OpenAI request."""
        if endpoint == "chat/completions":
            method = "streamGenerateContent?alt=sse" if stream else "generateContent"
            return f"{tr.model_path(body.get('model'))}:{method}", tr.to_gemini_request(body)
        if endpoint == "embeddings" and not stream:
            path = f"{tr.model_path(body.get('model'))}:batchEmbedContents"
            return path, tr.to_gemini_embed_request(body, body["model"])
        what = "streamed embeddings" if endpoint == "embeddings" else f"/v1/{endpoint}"
        raise unsupported(tr.PROVIDER, "model", f"it serves chat and embeddings, not {what}")

    async def _send(
        self, path: str, body: dict[str, Any], stream: bool, api_key: str | None = None
    ) -> Any:
        """POST through the SDK: a text body (whole answers) or an open ``httpx2.Response``
        (streams). ``api_key``: a project's own key, instead of the client's. Raises the
        mapped ``ForgeError``."""
        try:
            request = self._api._build_request("post", path, {}, None)
            request.headers.update(trace_headers())
            if api_key is not None:
                request.headers["x-goog-api-key"] = api_key
            request.data = orjson.dumps(body)  # bytes go out as they are
            response = await self._api._async_request(http_request=request, stream=stream)
        except Exception as exc:
            raise self.map_error(exc) from None
        if stream:
            return response.response_stream
        return response.response_stream[0] if response.response_stream else ""

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
        if isinstance(exc, genai_errors.APIError):
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None) or {}
            return self.status_error(exc.code, exc.message or exc.status, exc.details, headers)
        if isinstance(exc, httpx2.TimeoutException | asyncio.TimeoutError):
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

    def status_error(
        self, status: int, message: str | None, body: Any, headers: Mapping[str, str]
    ) -> ForgeError:
        """The platform error for Gemini's error (``{"error": {code, message, status,
        details}}``): Google's status names are not OpenAI codes, so only the message
        goes on; a wrong API key (400 API_KEY_INVALID) is the provider refusing the
        platform's credentials; RetryInfo stands in for a missing Retry-After."""
        error = body.get("error", body) if isinstance(body, dict) else {}
        details = error.get("details") if isinstance(error, dict) else None
        text = message or f"HTTP {status}"
        if status == 400 and "API_KEY_INVALID" in _reasons(details):
            status = 401
        if status == 400 and CONTEXT_TOO_LONG.search(text):
            return ContextLengthExceeded(text, param="messages", provider=self.name)
        if status == 504:
            return UpstreamTimeout(
                f"Provider {self.name!r} timed out (HTTP 504): {text}", provider=self.name
            )
        lowered = {k.lower(): v for k, v in headers.items()}
        if "retry-after" not in lowered and "retry-after-ms" not in lowered:
            delay = _retry_delay(details)
            if delay is not None:
                lowered["retry-after"] = str(delay)
        return status_error(self.name, status, {"error": {"message": text}}, lowered)

    def _event_error(self, payload: dict[str, Any]) -> ForgeError:
        error = payload.get("error")
        if not isinstance(error, dict):
            return self.stream_error(str(error))
        code = error.get("code")
        if code in (429, 503):
            return self.status_error(code, error.get("message"), payload, {})
        return self.stream_error(f"{error.get('status', 'error')}: {error.get('message', '')}")

    def stream_error(self, message: str) -> UpstreamError:
        return UpstreamError(
            f"Provider {self.name!r} failed mid-stream: {message}",
            code="upstream_stream_error",
            provider=self.name,
        )

    # ------------------------------------------------------------------ whole answers

    async def complete(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        *,
        api_key: str | None = None,
    ) -> ProviderReply:
        path, upstream_body = self._request(endpoint, body, stream=False)
        t0 = time.perf_counter()
        text = await self._send(path, upstream_body, False, api_key)
        upstream_ms = ms_since(t0)
        try:
            payload = parse_object(text, "a body")
            if endpoint == "embeddings":
                encoding = body.get("encoding_format")
                reply = tr.from_gemini_embed_response(payload, public_model, encoding)
            else:
                reply = tr.from_gemini_response(payload, public_model)
        except MalformedUpstream as exc:
            raise self.map_error(exc) from None
        except BAD_SHAPE as exc:
            malformed = MalformedUpstream(f"an unexpected body ({exc.__class__.__name__}: {exc})")
            raise self.map_error(malformed) from None
        usage = usage_of(reply)
        if usage is None:
            if endpoint == "embeddings":
                prompt = max(1, len(orjson.dumps(body.get("input") or "")) // 4)
                reply["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
            else:
                prompt = estimate_prompt_tokens(body)
            usage = Usage(prompt_tokens=prompt, estimated=True)
        return ProviderReply(body=orjson.dumps(reply), usage=usage, upstream_ms=upstream_ms)

    # ------------------------------------------------------------------ streams

    async def _chunks(
        self, events: AsyncIterator[bytes], public_model: str
    ) -> AsyncIterator[dict[str, Any]]:
        """OpenAI chunks, usage chunk last (if Gemini reported usage). Returns only when
        every choice finished; raises ``MalformedUpstream`` otherwise, and the mapped error
        for an error object in the stream."""
        translator = tr.GeminiStreamToOpenAI(public_model)
        async for data in events:
            payload = parse_object(data, "a stream chunk")
            if "error" in payload:
                raise self._event_error(payload)
            try:
                chunks = translator.feed(payload)
            except BAD_SHAPE as exc:
                raise MalformedUpstream(
                    f"an unexpected stream chunk ({exc.__class__.__name__})"
                ) from None
            for chunk in chunks:
                yield chunk
        if not translator.finished:
            raise MalformedUpstream("a stream that ended before it finished")
        usage_chunk = translator.usage_chunk()
        if usage_chunk is not None:
            yield usage_chunk

    async def stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        include_usage: bool,
        *,
        api_key: str | None = None,
    ) -> AsyncIterator[StreamItem]:
        path, upstream_body = self._request(endpoint, body, stream=True)
        t0 = time.perf_counter()
        response = await self._send(path, upstream_body, True, api_key)
        chunks = self._chunks(sse_data(response.aiter_bytes()), public_model)
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
            await chunks.aclose()
            await response.aclose()

    # ------------------------------------------------------------------ lifecycle

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        await self.client.aio.aclose()
        await self._http.aclose()  # the SDK leaves a client it was handed to its owner
        self.client.close()
