"""What a provider returns to the gateway, and the interface every provider implements.

These values cross a Ray hop on every request, so they are small slotted dataclasses
carrying the upstream's bytes (already in the OpenAI shape), not parsed models.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from forge.routing.provider_limits import UpstreamLimits

Endpoint = Literal["chat/completions", "completions", "embeddings"]


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False


@dataclass(slots=True)
class ProviderReply:
    """A whole (non-streamed) answer: the JSON body to send and what it cost; ``limits``:
    the provider's rate-limit headers with it, parsed, if it sent some."""

    body: bytes
    usage: Usage
    upstream_ms: float
    limits: UpstreamLimits | None = None


@dataclass(slots=True)
class StreamHead:
    """The first piece of a stream: headers go out with it, so it carries the upstream's
    time to this point (for the overhead header), and the provider's rate-limit headers,
    parsed, if it sent some."""

    data: bytes
    upstream_ms: float
    limits: UpstreamLimits | None = None


@dataclass(slots=True)
class StreamEnd:
    """The last item of every stream: how it ended and what it used."""

    usage: Usage
    status: Literal["ok", "error"] = "ok"
    error_code: str | None = None
    http_status: int = 200
    upstream_ms: float = 0.0
    finish_reason: str | None = None  # the first choice's, as the stream gave it
    content_chunks: int = 0  # chunks that carried content or tool calls
    extra: dict[str, Any] = field(default_factory=dict)


StreamItem = StreamHead | bytes | StreamEnd


class Provider(Protocol):
    """A provider proxy's plain class: the Ray deployment is a thin shell over it."""

    name: str

    async def complete(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        *,
        api_key: str | None = None,
    ) -> ProviderReply:
        """Send one request and return the whole answer; raises ``ForgeError``.
        ``api_key``: the caller's project's own key for this provider, instead of the
        platform's (only providers of ``forge.config.KEYED_TYPES`` get one)."""
        ...

    def stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        include_usage: bool,
        *,
        api_key: str | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Yield a ``StreamHead``, then SSE-framed chunks, then one ``StreamEnd``.

        Failures before the head raise ``ForgeError``; later ones become an error event,
        ``data: [DONE]`` and a ``StreamEnd`` with status ``error``.
        """
        ...

    async def close(self) -> None: ...
