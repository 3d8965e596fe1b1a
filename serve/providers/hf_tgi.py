"""Hugging Face Text Generation Inference (and Inference Endpoints running it) through the
`openai` SDK on TGI's OpenAI-compatible Messages API. TGI's own error bodies are
`{"error": "...", "error_type": "validation" | "overloaded" | "generation" | ...}`."""

from __future__ import annotations

from forge.errors import ForgeError, InvalidRequest, UpstreamError, UpstreamUnavailable
from serve.providers.llamacpp import _json_body
from serve.providers.openai_compat import OpenAICompatProvider


class TgiProvider(OpenAICompatProvider):
    def map_error(self, exc: BaseException) -> ForgeError:
        body = _json_body(exc)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            message, kind = body["error"], body.get("error_type")
            if kind == "validation":
                return InvalidRequest(message, code="invalid_value", provider=self.name)
            if kind == "overloaded":
                return UpstreamUnavailable(
                    f"Provider {self.name!r} is overloaded: {message}",
                    retry_after=1,
                    provider=self.name,
                )
            if kind in ("generation", "incomplete_generation"):
                return UpstreamError(
                    f"Provider {self.name!r} failed to generate: {message}", provider=self.name
                )
        return super().map_error(exc)
