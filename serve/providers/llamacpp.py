"""llama.cpp's server through the `openai` SDK: OpenAI-compatible `/v1`, plus its own
`/health` (503 while the model loads) and its context-size error."""

from __future__ import annotations

from typing import Any

import httpx2

from forge.errors import ContextLengthExceeded, ForgeError
from serve.providers.openai_compat import OpenAICompatProvider


class LlamaCppProvider(OpenAICompatProvider):
    def map_error(self, exc: BaseException) -> ForgeError:
        body = _json_body(exc)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("type") == "exceed_context_size_error":
            limit = error.get("n_ctx")
            return ContextLengthExceeded(
                f"The prompt ({error.get('n_prompt_tokens', '?')} tokens) exceeds the context "
                f"size of model server {self.name!r}" + (f" ({limit} tokens)." if limit else "."),
                param="messages",
                provider=self.name,
            )
        return super().map_error(exc)

    async def ping(self) -> bool:
        """llama.cpp's `/health`: 200 once the model is loaded, 503 while loading."""
        root = str(self.client.base_url).rstrip("/").removesuffix("/v1")
        try:
            response = await self.client._client.get(root + "/health", timeout=5)
        except httpx2.HTTPError:
            return False
        return response.status_code == 200


def _json_body(exc: BaseException) -> Any:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    try:
        return response.json()
    except ValueError:
        return None
