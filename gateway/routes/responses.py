"""OpenAI Responses ingress, stateless: `POST /v1/responses` for any model behind the
platform, served on its chat path (so usage is recorded exactly as for a chat call).

Not yet: stored responses (`previous_response_id`, GET/DELETE `/v1/responses/{id}`,
`input_items`), which are a 400 naming the field; built-in tools, a 400 naming the tool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from forge.errors import InvalidRequest
from forge.keys import KeyInfo
from forge.protocol.responses import CreateResponseRequest
from gateway.deps import caller, runtime
from gateway.relay import CallContext
from gateway.routes.inference import validated_body
from gateway.runtime import GatewayRuntime
from gateway.sse import EventStreamResponse
from serve.translate import responses as tr

router = APIRouter()


@router.post("/v1/responses")
async def create_response(
    request: Request, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> Response:
    body = await validated_body(request, rt, CreateResponseRequest)
    chat = tr.to_chat_request(body)
    ctx = CallContext.of(request.state, key.id, "chat/completions")
    try:
        if body.get("stream"):
            source, headers = await rt.relay.open_stream(ctx, chat, include_usage=True)
            return EventStreamResponse(_response_events(source, body), headers, rt.drain)
        content, headers = await rt.relay.complete(ctx, chat)
    except InvalidRequest as exc:
        # the chat path names its own fields (`response_format`, `messages[2]…`)
        exc.param = tr.responses_param(exc.param, body)
        raise
    response = tr.to_response(orjson.loads(content), body)
    return Response(orjson.dumps(response), media_type="application/json", headers=headers)


async def _response_events(
    source: AsyncIterator[bytes], body: dict[str, Any]
) -> AsyncIterator[bytes]:
    """Re-frame the relay's chat SSE chunks as the Responses event sequence."""
    translator = tr.ChatStreamToResponses(body)
    try:
        async for frame in source:
            data = frame.removeprefix(b"data: ").strip()
            if data == b"[DONE]":
                for out in translator.finish():
                    yield out
                continue
            chunk = orjson.loads(data)
            if "error" in chunk:
                for out in translator.fail(chunk["error"] or {}):
                    yield out
                return
            for out in translator.feed(chunk):
                yield out
        if not translator.ended:  # the source ended without [DONE]
            for out in translator.fail({"message": "The model's stream ended early."}):
                yield out
    finally:
        await source.aclose()  # type: ignore[attr-defined]
