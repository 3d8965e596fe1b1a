"""Anthropic-compatible ingress: `POST /v1/messages` for any model behind the platform,
so the official `anthropic` SDK (and tools built on it) work unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from forge.keys import KeyInfo
from forge.protocol.anthropic import CountTokensRequest, MessagesRequest
from forge.translate import anthropic as tr
from gateway.deps import caller, runtime
from gateway.errors import anthropic_stream_error
from gateway.routes.inference import validated_body
from gateway.runtime import GatewayRuntime
from gateway.sse import EventStreamResponse

router = APIRouter()


@router.post("/v1/messages")
async def messages(
    request: Request, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> Response:
    body = await validated_body(request, rt, MessagesRequest)
    chat = tr.from_anthropic_request(body)
    public_model = body["model"]
    ctx = rt.relay.context(request, key, "chat/completions")
    if body.get("stream"):
        source, headers = await rt.relay.open_stream(ctx, chat, include_usage=True)
        return EventStreamResponse(_anthropic_events(source, public_model), headers, rt.drain)
    content, headers = await rt.relay.complete(ctx, chat)
    message = tr.to_anthropic_response(orjson.loads(content), public_model)
    return Response(orjson.dumps(message), media_type="application/json", headers=headers)


async def _anthropic_events(source: AsyncIterator[bytes], model: str) -> AsyncIterator[bytes]:
    """Re-frame the relay's OpenAI SSE chunks as Anthropic's named events."""
    translator = tr.OpenAIStreamToAnthropic(model)
    try:
        async for frame in source:
            data = frame.removeprefix(b"data: ").strip()
            if data == b"[DONE]":
                for out in translator.finish():
                    yield out
                continue
            chunk = orjson.loads(data)
            if "error" in chunk:
                yield tr.sse(anthropic_stream_error(chunk["error"]))
                return
            for out in translator.feed(chunk):
                yield out
    finally:
        await source.aclose()  # type: ignore[attr-defined]


@router.post("/v1/messages/count_tokens")
async def count_tokens(
    request: Request, _: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JSONResponse:
    """An estimate (4 characters a token) for any model: exact counts need the model's own
    tokenizer, which the platform does not hold for remote providers."""
    body = await validated_body(request, rt, CountTokensRequest)
    rt.router.model(body["model"])
    text = orjson.dumps([body.get("system"), body["messages"], body.get("tools")])
    return JSONResponse({"input_tokens": max(1, len(text) // 4)})
