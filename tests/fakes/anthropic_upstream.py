"""A fake Anthropic Messages API speaking the documented wire format: `POST /v1/messages`,
`x-api-key` (or Bearer) plus `anthropic-version` headers, JSON and SSE bodies with named
events, and `{"type": "error", "error": {...}}` error bodies (429 with retry-after, 529
overloaded). Scenarios by model name, as in the OpenAI fake: ``error-<status>``, ``hang``,
``malformed``, ``midstream-error`` (an error event after two deltas), ``truncated``
(the stream stops without message_stop), ``slow-stream``, ``cached`` (reports cache reads).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.server import FakeUpstream

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel".split()  # noqa: SIM905
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _error(status: int, message: str) -> web.Response:
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    headers = {"retry-after": "11"} if status == 429 else None
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _event(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class FakeAnthropic(FakeUpstream):
    def __init__(self, api_key: str = "sk-ant-test") -> None:
        super().__init__()
        self.api_key = api_key

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        return app

    async def messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "Request body is not valid JSON.")
        self.requests.append({"headers": dict(request.headers), "body": body})
        key = request.headers.get("x-api-key") or request.headers.get(
            "Authorization", ""
        ).removeprefix("Bearer ")
        if key != self.api_key:
            return _error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        for field in ("model", "messages", "max_tokens"):
            if field not in body:
                return _error(400, f"{field}: Field required")
        model = str(body["model"])
        if model.startswith("error-"):
            return _error(int(model.split("-", 1)[1]), "The upstream refused this request.")
        if model == "hang":
            await asyncio.sleep(3600)
        if model == "malformed":
            return web.Response(status=200, text="{not json", content_type="application/json")
        words = WORDS[: min(len(WORDS), int(body["max_tokens"]))]
        stop_reason, stop_sequence = ("max_tokens" if len(words) < len(WORDS) else "end_turn"), None
        for i, w in enumerate(words):
            if w in (body.get("stop_sequences") or ()):
                words, stop_reason, stop_sequence = words[:i], "stop_sequence", w
                break
        tools = body.get("tools") or []
        use_tool = bool(tools) and (body.get("tool_choice") or {}).get("type") != "none"
        usage = {
            "input_tokens": 12,
            "output_tokens": len(words),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 5 if model == "cached" else 0,
        }
        mid = "msg_" + uuid.uuid4().hex[:24]
        if use_tool:
            content = [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": tools[0]["name"],
                    "input": {"location": "Paris"},
                },
            ]
            stop_reason = "tool_use"
        else:
            content = [{"type": "text", "text": " ".join(words)}]
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": stop_sequence,
                    "usage": usage,
                },
                dumps=lambda o: orjson.dumps(o).decode(),
            )
        return await self._stream(
            request, model, mid, words, content, stop_reason, stop_sequence, usage, use_tool
        )

    async def _stream(
        self, request, model, mid, words, content, stop_reason, stop_sequence, usage, use_tool
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        try:
            await resp.write(
                _event(
                    {
                        "type": "message_start",
                        "message": {
                            "id": mid,
                            "type": "message",
                            "role": "assistant",
                            "model": model,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {**usage, "output_tokens": 1},
                        },
                    }
                )
            )
            await resp.write(
                _event(
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    }
                )
            )
            await resp.write(_event({"type": "ping"}))
            pieces = (
                ["Let me check."]
                if use_tool
                else [(" " if i else "") + w for i, w in enumerate(words)]
            )
            if model == "slow-stream":
                pieces = [f" w{i}" for i in range(200)]
            for i, piece in enumerate(pieces):
                if i == 2 and model in ("midstream-error", "truncated"):
                    if model == "midstream-error":
                        await resp.write(
                            _event(
                                {
                                    "type": "error",
                                    "error": {"type": "overloaded_error", "message": "Overloaded"},
                                }
                            )
                        )
                    return resp
                if model == "slow-stream":
                    await asyncio.sleep(0.02)
                await resp.write(
                    _event(
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": piece},
                        }
                    )
                )
            await resp.write(_event({"type": "content_block_stop", "index": 0}))
            if use_tool:
                tool = content[1]
                await resp.write(
                    _event(
                        {
                            "type": "content_block_start",
                            "index": 1,
                            "content_block": {
                                "type": "tool_use",
                                "id": tool["id"],
                                "name": tool["name"],
                                "input": {},
                            },
                        }
                    )
                )
                for part in ('{"location"', ': "Paris"}'):
                    await resp.write(
                        _event(
                            {
                                "type": "content_block_delta",
                                "index": 1,
                                "delta": {"type": "input_json_delta", "partial_json": part},
                            }
                        )
                    )
                await resp.write(_event({"type": "content_block_stop", "index": 1}))
            await resp.write(
                _event(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                        "usage": {"output_tokens": usage["output_tokens"]},
                    }
                )
            )
            await resp.write(_event({"type": "message_stop"}))
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled_streams += 1
            raise
        return resp
