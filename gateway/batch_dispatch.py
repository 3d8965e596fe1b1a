"""How a gateway replica runs a batch's line: as a request of the key that made the
batch, through the same relay as live traffic (routing, fallbacks, rate limits, budgets,
usage records), queued behind live requests for a provider's capacity. Its answer, or
its error, becomes the line's output; a limit or a budget defers it instead."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from forge.batches.objects import output_line
from forge.batches.runner import Later, Outcome, later
from forge.batches.store import Claimed, LineResult, line_id
from forge.budgets.model import QuotaExceeded
from forge.errors import ForgeError, InvalidRequest, RateLimited, ServiceUnavailable
from forge.protocol.exchange import Endpoint
from forge.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from gateway.errors import validation_error
from gateway.relay import CallContext
from gateway.runtime import GatewayRuntime

ENDPOINTS: dict[str, tuple[Endpoint, type[BaseModel]]] = {
    "/v1/chat/completions": ("chat/completions", ChatCompletionRequest),
    "/v1/completions": ("completions", CompletionRequest),
    "/v1/embeddings": ("embeddings", EmbeddingRequest),
}
BUDGET_PAUSE_S = 60.0  # a budget stop: look again this often (the period may turn)


class BatchDispatch:
    def __init__(self, runtime: GatewayRuntime) -> None:
        self.rt = runtime

    async def __call__(self, claimed: Claimed, raw: bytes) -> Outcome:
        ident = line_id(claimed.batch_id, claimed.line)
        custom_id: str | None = None
        try:
            item = orjson.loads(raw)
            custom_id = item.get("custom_id")
            endpoint, body = self._request(claimed, item)
        except ForgeError as exc:
            return _failed(claimed, ident, custom_id, None, exc)
        except ValueError:
            error = InvalidRequest("This line is not a JSON object.", code="invalid_json")
            return _failed(claimed, ident, custom_id, None, error)
        request_id = "req_" + uuid.uuid4().hex
        try:
            key = await self.rt.verifier.verify_digest(claimed.key_hash)
            ctx = CallContext(
                request_id,
                key.id,
                time.perf_counter(),
                endpoint,
                org_id=key.org_id,
                project_id=key.project_id,
                key=key,
                body_bytes=len(raw),
                background=True,
            )
            content, _ = await self.rt.relay.complete(ctx, body)
        except QuotaExceeded as exc:
            return later(BUDGET_PAUSE_S, f"budget: {exc.message}", pause=True)
        except (RateLimited, ServiceUnavailable) as exc:
            return later(exc.retry_after or 1.0, exc.message)
        except ForgeError as exc:
            return _failed(claimed, ident, custom_id, request_id, exc)
        answer = orjson.loads(content)
        output = output_line(ident, custom_id, 200, request_id, answer)
        return LineResult(claimed.batch_id, claimed.line, True, output)

    @staticmethod
    def _request(claimed: Claimed, item: Any) -> tuple[Endpoint, dict[str, Any]]:
        if not isinstance(item, dict) or not isinstance(item.get("body"), dict):
            raise InvalidRequest("A batch line needs a 'body' object.", param="body")
        if item.get("url") != claimed.endpoint:
            raise InvalidRequest(
                f"This line's url {item.get('url')!r} is not the batch's endpoint "
                f"{claimed.endpoint!r}.",
                param="url",
                code="invalid_url",
            )
        endpoint, model = ENDPOINTS[claimed.endpoint]
        body: dict[str, Any] = item["body"]
        if body.get("stream"):
            raise InvalidRequest("A batch line cannot stream.", param="body.stream")
        try:
            model.model_validate(body)
        except ValidationError as exc:
            raise validation_error([dict(e) for e in exc.errors()]) from None
        return endpoint, body


def _failed(
    claimed: Claimed,
    ident: str,
    custom_id: str | None,
    request_id: str | None,
    error: ForgeError,
) -> LineResult:
    output = output_line(ident, custom_id, error.status_code, request_id, error.to_body())
    return LineResult(claimed.batch_id, claimed.line, False, output)


__all__ = ["BatchDispatch", "Later"]
