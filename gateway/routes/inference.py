"""OpenAI-compatible inference: chat completions, completions, embeddings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from forge.keys import KeyInfo
from forge.protocol.exchange import Endpoint
from forge.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from gateway.body import read_json_object
from gateway.deps import caller, runtime
from gateway.errors import validation_error
from gateway.runtime import GatewayRuntime
from gateway.sse import EventStreamResponse

router = APIRouter()


async def validated_body(
    request: Request, rt: GatewayRuntime, model: type[BaseModel]
) -> dict[str, Any]:
    body = await read_json_object(request, rt.config.server.max_body_bytes)
    try:
        model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
    return body


async def _serve(
    request: Request, rt: GatewayRuntime, key: KeyInfo, endpoint: Endpoint, body: dict[str, Any]
) -> Response:
    ctx = rt.relay.context(request, key, endpoint)
    if body.get("stream") and endpoint != "embeddings":
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        source, headers = await rt.relay.open_stream(ctx, body, include_usage)
        return EventStreamResponse(source, headers, rt.drain)
    content, headers = await rt.relay.complete(ctx, body)
    return Response(content, media_type="application/json", headers=headers)


@router.post("/v1/chat/completions")
async def chat_completions(
    request: Request, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> Response:
    body = await validated_body(request, rt, ChatCompletionRequest)
    return await _serve(request, rt, key, "chat/completions", body)


@router.post("/v1/completions")
async def completions(
    request: Request, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> Response:
    body = await validated_body(request, rt, CompletionRequest)
    return await _serve(request, rt, key, "completions", body)


@router.post("/v1/embeddings")
async def embeddings(
    request: Request, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> Response:
    body = await validated_body(request, rt, EmbeddingRequest)
    return await _serve(request, rt, key, "embeddings", body)
