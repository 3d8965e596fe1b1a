"""OpenAI, Azure OpenAI and any OpenAI-compatible server, through the official `openai` SDK.

The wire format is already the platform's, so the only translation is putting the public
model name back; Azure's deployment URLs and `api-key` header are the SDK's business.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

from forge.config import ProviderConfig
from forge.protocol.exchange import Endpoint
from serve.providers.sdk_base import MalformedUpstream, SdkProvider, parse_object

POOL = httpx2.Limits(max_connections=2000, max_keepalive_connections=200, keepalive_expiry=60)


def http_client(cfg: ProviderConfig) -> httpx2.AsyncClient:
    """One pooled HTTP client per provider, with its timeouts."""
    timeout = httpx2.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s)
    return httpx2.AsyncClient(limits=POOL, timeout=timeout)


def sdk_http_client(cfg: ProviderConfig) -> httpx2.AsyncClient:
    """The pooled client for the Stainless SDKs (`openai`, `anthropic`): their own aiohttp
    transport (``DefaultAioHttpClient``) under the httpx2 interface they expect. Half the
    CPU of httpx2's own transport per streamed answer (bench/README.md, "Streaming CPU");
    its errors are mapped from their aiohttp cause (``sdk_base.transport_error``), since
    the SDK's vendored map reports a refused connection as a connect timeout."""
    timeout = httpx2.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s)
    client: httpx2.AsyncClient = openai.DefaultAioHttpClient(
        limits=POOL, timeout=timeout, follow_redirects=False
    )
    return client


def api_key(cfg: ProviderConfig) -> str:
    """The provider's key, read from the environment where the client is built."""
    return (os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else "") or "unset"


def build_client(cfg: ProviderConfig) -> openai.AsyncOpenAI:
    common: dict[str, Any] = {
        "api_key": api_key(cfg),
        "timeout": httpx2.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
        "max_retries": cfg.max_retries,
        "default_headers": cfg.headers or None,
        "http_client": sdk_http_client(cfg),
    }
    if cfg.type == "azure":
        return openai.AsyncAzureOpenAI(
            azure_endpoint=cfg.base_url, api_version=cfg.api_version, **common
        )
    return openai.AsyncOpenAI(base_url=cfg.base_url, **common)


class OpenAICompatProvider(SdkProvider):
    sdk = openai
    limit_headers = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")

    def __init__(self, cfg: ProviderConfig, client: openai.AsyncOpenAI | None = None) -> None:
        super().__init__(cfg, client or build_client(cfg))

    def auth_headers(self, api_key: str) -> dict[str, str]:
        if self.cfg.type == "azure":
            return {"api-key": api_key}
        return {"Authorization": f"Bearer {api_key}"}

    def request(
        self, endpoint: Endpoint, body: dict[str, Any], stream: bool
    ) -> tuple[str, dict[str, Any]]:
        if stream and self.cfg.stream_usage:
            options = {**(body.get("stream_options") or {}), "include_usage": True}
            body = {**body, "stream_options": options}
        return "/" + endpoint, body

    def reply(
        self, endpoint: Endpoint, payload: dict[str, Any], public_model: str
    ) -> dict[str, Any]:
        if "model" in payload:
            payload["model"] = public_model
        return payload

    async def chunks(
        self, events: AsyncIterator[bytes], public_model: str
    ) -> AsyncIterator[dict[str, Any]]:
        finished = False
        async for data in events:
            if data.strip() == b"[DONE]":
                return
            chunk = parse_object(data, "a stream chunk")
            if chunk.get("error"):
                err = chunk["error"]
                raise self.stream_error(err.get("message") if isinstance(err, dict) else str(err))
            for choice in chunk.get("choices") or ():
                finished = finished or bool(choice.get("finish_reason"))
            if "model" in chunk:
                chunk["model"] = public_model
            yield chunk
        if not finished:
            raise MalformedUpstream("a stream that ended before it finished")
