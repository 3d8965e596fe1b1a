"""Anthropic's Messages API through the official `anthropic` SDK (`AsyncAnthropic`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2

from forge.config import ProviderConfig
from forge.errors import ForgeError, UpstreamUnavailable
from forge.protocol.exchange import Endpoint
from forge.translate import anthropic as tr
from forge.translate.common import unsupported
from serve.providers.openai_compat import api_key, sdk_http_client
from serve.providers.sdk_base import MalformedUpstream, SdkProvider, parse_object


def build_client(cfg: ProviderConfig) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key=api_key(cfg),
        base_url=cfg.base_url,  # None: the SDK's default
        timeout=httpx2.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
        max_retries=cfg.max_retries,
        default_headers=cfg.headers or None,
        http_client=sdk_http_client(cfg),
    )


class AnthropicProvider(SdkProvider):
    sdk = anthropic
    limit_headers = (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-remaining",
    )

    def __init__(self, cfg: ProviderConfig, client: anthropic.AsyncAnthropic | None = None) -> None:
        super().__init__(cfg, client or build_client(cfg))

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    def request(
        self, endpoint: Endpoint, body: dict[str, Any], stream: bool
    ) -> tuple[str, dict[str, Any]]:
        if endpoint != "chat/completions":
            raise unsupported("anthropic", "model", f"it serves chat only, not /v1/{endpoint}")
        return "/v1/messages", tr.to_anthropic_request(body, body["model"])

    def reply(
        self, endpoint: Endpoint, payload: dict[str, Any], public_model: str
    ) -> dict[str, Any]:
        if payload.get("type") != "message":
            raise MalformedUpstream(f"a body of type {payload.get('type')!r}, not a message")
        return tr.from_anthropic_response(payload, public_model)

    async def chunks(
        self, events: AsyncIterator[bytes], public_model: str
    ) -> AsyncIterator[dict[str, Any]]:
        translator = tr.AnthropicStreamToOpenAI(public_model)
        async for data in events:
            event = parse_object(data, "a stream event")
            kind = event.get("type")
            if kind == "error":
                raise self._event_error(event)
            if kind == "message_stop":
                yield translator.usage_chunk()
                return
            for chunk in translator.feed(event):
                yield chunk
        raise MalformedUpstream("a stream that ended before message_stop")

    def _event_error(self, event: dict[str, Any]) -> ForgeError:
        error = event.get("error") or {}
        message = error.get("message", "")
        if error.get("type") == "overloaded_error":
            return UpstreamUnavailable(
                f"Provider {self.name!r} is overloaded: {message}", provider=self.name
            )
        return self.stream_error(f"{error.get('type', 'error')}: {message}")
