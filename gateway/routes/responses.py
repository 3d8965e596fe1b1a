"""OpenAI Responses ingress: `POST /v1/responses` for any model behind the platform,
served on its chat path (so usage is recorded exactly as for a chat call), and stored
responses: `store` (the default) keeps the finished Response for its key, which can
`GET` and `DELETE` it, list its `input_items` and continue it with
`previous_response_id`.

An ``item_reference`` input item is replaced by the output item it names, taken from the
key's stored response that holds it. A response (or item) that is unknown, expired or
another key's is one and the same 404, so a key never learns that someone else's exists.
Built-in tools are a 400 naming the tool.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar, cast

import orjson
from fastapi import APIRouter, Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from forge.errors import InvalidRequest, NotFound, ServiceUnavailable
from forge.keys import KeyInfo
from forge.protocol.responses import CreateResponseRequest
from forge.responses_store import previous_not_found
from forge.translate import responses as tr
from gateway.deps import caller, runtime
from gateway.routes.inference import validated_body
from gateway.runtime import GatewayRuntime, Responses
from gateway.sse import EventStreamResponse

log = logging.getLogger(__name__)
router = APIRouter()
T = TypeVar("T")
Save = Callable[[dict[str, Any]], Awaitable[None]]
NOT_STORED = "The response was generated but could not be stored; try again."


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.")


async def _db(call: Awaitable[T]) -> T:
    """A stored-responses call; the database unreachable or failing is a 503."""
    try:
        return await call
    except (SQLAlchemyError, OSError) as exc:
        log.warning("stored responses: %s: %s", type(exc).__name__, exc)
        raise ServiceUnavailable(
            "Stored responses are unavailable right now.", retry_after=1
        ) from None


def _store(rt: GatewayRuntime, response_id: str) -> Responses:
    if rt.responses is None:  # a gateway without a store has stored nothing
        raise _not_found(response_id)
    return rt.responses


@router.post("/v1/responses")
async def create_response(
    request: Request, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> Response:
    body = await validated_body(request, rt, CreateResponseRequest)
    store = rt.responses if body.get("store") is not False else None
    if store is not None and not await rt.keeps_bodies(key.project_id):
        store = None  # the project's data retention keeps no bodies
    body["store"] = store is not None  # echoed as what is really done
    history: list[dict[str, Any]] = []
    previous = body.get("previous_response_id")
    if previous is not None:
        if rt.responses is None:
            raise previous_not_found(previous)
        history = await _db(rt.responses.conversation(previous, key.project_id))
    referenced = await _referenced_items(rt, body, key.project_id)
    if referenced:
        body = tr.with_referenced(body, referenced)
    if previous is not None or referenced:
        tr.check_call_outputs(body, history)
    chat = tr.to_chat_request(body, history)
    save: Save | None = None
    if store is not None:
        items = tr.input_items(body)

        async def save(response: dict[str, Any]) -> None:
            await _db(store.save(key.project_id, response, items))

    ctx = rt.relay.context(request, key, "chat/completions")
    try:
        if body.get("stream"):
            source, headers = await rt.relay.open_stream(ctx, chat, include_usage=True)
            return EventStreamResponse(_response_events(source, body, save), headers, rt.drain)
        content, headers = await rt.relay.complete(ctx, chat)
    except InvalidRequest as exc:
        # the chat path names its own fields (`response_format`, `messages[2]…`)
        exc.param = tr.responses_param(exc.param, body, history)
        raise
    response = tr.to_response(orjson.loads(content), body)
    if save is not None:
        try:
            await save(response)
        except ServiceUnavailable as exc:
            exc.message = NOT_STORED
            raise
    return Response(orjson.dumps(response), media_type="application/json", headers=headers)


async def _referenced_items(
    rt: GatewayRuntime, body: dict[str, Any], owner: str
) -> dict[int, dict[str, Any]]:
    """The stored output item each ``item_reference`` of the input names, by its index in
    the input; one the key has no live stored response for is a 404 naming it."""
    found: dict[int, dict[str, Any]] = {}
    responses: dict[str, dict[str, Any] | None] = {}
    for index, reference in tr.references(body):
        response_id = tr.response_of_item(reference)
        stored = None
        if response_id is not None and rt.responses is not None:
            if response_id not in responses:
                responses[response_id] = await _db(rt.responses.get(response_id, owner))
            stored = responses[response_id]
        outputs = (stored or {}).get("output") or ()
        item = next((o for o in outputs if o.get("id") == reference), None)
        if item is None:
            raise NotFound(
                f"Item with id '{reference}' not found.",
                param=f"input[{index}].id",
                code="item_not_found",
            )
        found[index] = item
    return found


def _query_refusals(request: Request, allowed: tuple[str, ...] = ()) -> None:
    """Query parameters of the spec this platform does not serve: a 400 naming them."""
    query = request.query_params
    if query.getlist("include") or query.getlist("include[]"):
        raise InvalidRequest(
            "The parameter 'include' is not supported: stored responses hold every field "
            "they have already.",
            param="include",
            code="unsupported_parameter",
        )
    if "stream" not in allowed and query.get("stream", "false").lower() not in ("false", "0"):
        raise InvalidRequest(
            "Streaming a stored response again is not supported: retrieve it as JSON.",
            param="stream",
            code="unsupported_parameter",
        )


@router.get("/v1/responses/{response_id}")
async def retrieve_response(
    response_id: str,
    request: Request,
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> Response:
    _query_refusals(request)
    stored = await _db(_store(rt, response_id).get(response_id, key.project_id))
    if stored is None:
        raise _not_found(response_id)
    return Response(orjson.dumps(stored), media_type="application/json")


@router.delete("/v1/responses/{response_id}")
async def delete_response(
    response_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> Response:
    if not await _db(_store(rt, response_id).delete(response_id, key.project_id)):
        raise _not_found(response_id)
    body = {"id": response_id, "object": "response", "deleted": True}
    return Response(orjson.dumps(body), media_type="application/json")


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise InvalidRequest(
            f"Invalid value for 'limit': {raw!r}; expected an integer from 1 to 100.",
            param="limit",
            code="invalid_value",
        )
    return limit


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    request: Request,
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> Response:
    _query_refusals(request)
    query = request.query_params
    limit = _limit(query.get("limit"))
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            f"Invalid value for 'order': {order!r}; expected 'asc' or 'desc'.",
            param="order",
            code="invalid_value",
        )
    page = await _db(
        _store(rt, response_id).input_items(
            response_id,
            key.project_id,
            limit=limit,
            order=cast(Literal["asc", "desc"], order),
            after=query.get("after"),
            before=query.get("before"),
        )
    )
    if page is None:
        raise _not_found(response_id)
    return Response(orjson.dumps(page), media_type="application/json")


async def _response_events(
    source: AsyncIterator[bytes], body: dict[str, Any], save: Save | None
) -> AsyncIterator[bytes]:
    """Re-frame the relay's chat SSE chunks as the Responses event sequence; a stored
    response is saved before its final event goes out (the object saved is the one that
    event carries), so a client that has seen it can retrieve it at once."""
    translator = tr.ChatStreamToResponses(body)
    try:
        async for frame in source:
            data = frame.removeprefix(b"data: ").strip()
            if data == b"[DONE]":
                for out in await _conclude(translator, save):
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


async def _conclude(translator: tr.ChatStreamToResponses, save: Save | None) -> list[bytes]:
    if translator.ended:
        return []
    out = translator.conclude()
    if save is not None:
        try:
            await save(translator.response)
        except ServiceUnavailable:
            return out + translator.error_event("server_error", NOT_STORED)
    return out + translator.final_event()
