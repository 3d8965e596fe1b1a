"""A fake Anthropic Messages API speaking the documented wire format: `POST /v1/messages`,
`x-api-key` (or Bearer) plus `anthropic-version` headers, JSON and SSE bodies with named
events, and `{"type": "error", "error": {...}}` error bodies (429 with retry-after, 529
overloaded). Scenarios by model name, as in the OpenAI fake: ``error-<status>``, ``hang``,
``malformed``, ``midstream-error`` (an error event after two deltas), ``truncated``
(the stream stops without message_stop), ``slow-stream``, ``cached`` (reports cache reads).

Request bodies are checked as strictly as Anthropic checks them, and refused with a 400
``invalid_request_error`` in Anthropic's wording: unknown fields, wrong types, malformed
content blocks, empty or whitespace-only text, tool results that answer nothing, tool uses
left unanswered, and ``temperature`` with ``top_p`` for the models that take only one
(Opus 4.1+, Sonnet 4.5+, Haiku 4.5+). The models here are written from Anthropic's API
reference, independently of the gateway's own (``forge.protocol.anthropic``), so that the
fake can catch the provider sending what Anthropic would refuse. Server tools and beta
features (files, MCP, containers) are not faked.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Annotated, Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from tests.fakes.rate_limits import RateLimitHeaders
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
ONE_SAMPLER = (
    "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
)


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


# ----------------------------------------------------------------------------- request shapes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _text_or(block: Any) -> Any:
    """``str | list[block]``, with errors reported against the shape the input has."""
    return Annotated[
        Annotated[str, Tag("str")] | Annotated[list[block], Tag("list")],
        Discriminator(lambda v: "str" if isinstance(v, str) else "list"),
    ]


class CacheControl(_Strict):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class Text(_Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class Base64Image(_Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class Url(_Strict):
    type: Literal["url"]
    url: str


class Image(_Strict):
    type: Literal["image"]
    source: Annotated[Base64Image | Url, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class Base64Pdf(_Strict):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PlainText(_Strict):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class ContentSource(_Strict):
    type: Literal["content"]
    content: _text_or(Annotated[Text | Image, Field(discriminator="type")])


class Citations(_Strict):
    enabled: bool | None = None


class Document(_Strict):
    type: Literal["document"]
    source: Annotated[Base64Pdf | PlainText | ContentSource | Url, Field(discriminator="type")]
    title: str | None = None
    context: str | None = None
    citations: Citations | None = None
    cache_control: CacheControl | None = None


ToolId = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]+$")]


class ToolUse(_Strict):
    type: Literal["tool_use"]
    id: ToolId
    name: Annotated[str, Field(min_length=1)]
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResult(_Strict):
    type: Literal["tool_result"]
    tool_use_id: ToolId
    content: _text_or(Annotated[Text | Image | Document, Field(discriminator="type")]) | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class Thinking(_Strict):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinking(_Strict):
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[
    Text | Image | Document | ToolUse | ToolResult | Thinking | RedactedThinking,
    Field(discriminator="type"),
]


class Message(_Strict):
    role: Literal["user", "assistant"]
    content: _text_or(Block)


class InputSchema(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # JSON Schema keywords
    type: Literal["object"]


class Tool(_Strict):
    type: Literal["custom"] | None = None
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")]
    description: str | None = None
    input_schema: InputSchema
    cache_control: CacheControl | None = None


class ChoiceAuto(_Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ChoiceAny(_Strict):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ChoiceTool(_Strict):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ChoiceNone(_Strict):
    type: Literal["none"]


class Metadata(_Strict):
    user_id: Annotated[str, Field(max_length=256)] | None = None


class ThinkingEnabled(_Strict):
    type: Literal["enabled"]
    budget_tokens: Annotated[int, Field(ge=1024)]


class ThinkingOff(_Strict):
    type: Literal["disabled", "adaptive"]


class MessagesBody(_Strict):
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)]
    system: _text_or(Text) | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    tools: list[Tool] | None = None
    tool_choice: (
        Annotated[ChoiceAuto | ChoiceAny | ChoiceTool | ChoiceNone, Field(discriminator="type")]
        | None
    ) = None
    metadata: Metadata | None = None
    thinking: Annotated[ThinkingEnabled | ThinkingOff, Field(discriminator="type")] | None = None
    service_tier: Literal["auto", "standard_only"] | None = None


def takes_one_sampler(model: str) -> bool:
    """Opus 4.1 and later, Sonnet and Haiku 4.5 and later: ``temperature`` or ``top_p``."""
    found = re.search(r"claude-(opus|sonnet|haiku)-(\d+)(?:-(\d{1,2}))?(?!\d)", model)
    if not found:
        return False
    family, major, minor = found[1], int(found[2]), int(found[3] or 0)
    first = {"opus": (4, 1), "sonnet": (4, 5), "haiku": (4, 5)}[family]
    return (major, minor) >= first


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("str", "list"))


def _blocks(msg: Message) -> list[Any]:
    return [] if isinstance(msg.content, str) else list(msg.content)


def refusal(raw: dict[str, Any]) -> str | None:
    """Anthropic's message for a body it would refuse, or None for one it accepts."""
    try:
        body = MessagesBody.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{_where(first['loc'])}: {first['msg']}"
    both = body.temperature is not None and body.top_p is not None
    if both and takes_one_sampler(body.model):
        return ONE_SAMPLER
    if isinstance(body.thinking, ThinkingEnabled) and body.thinking.budget_tokens >= (
        body.max_tokens
    ):
        return "`max_tokens` must be greater than `thinking.budget_tokens`."
    names = [t.name for t in body.tools or ()]
    if len(names) != len(set(names)):
        return "tools: Tool names must be unique."
    for j, block in enumerate(body.system if isinstance(body.system, list) else ()):
        if not block.text.strip():
            return f"system.{j}: text content blocks must contain non-whitespace text"
    return _conversation_refusal(body.messages)


def _conversation_refusal(messages: list[Message]) -> str | None:
    last = len(messages) - 1
    for i, msg in enumerate(messages):
        prefill = i == last and msg.role == "assistant"
        if msg.content == "" and not prefill:
            return "messages: text content blocks must be non-empty"
        blocks = _blocks(msg)
        if msg.content == [] and not prefill:
            return (
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        for j, block in enumerate(blocks):
            where = f"messages.{i}.content.{j}"
            if isinstance(block, Text) and not block.text:
                return "messages: text content blocks must be non-empty"
            if isinstance(block, Text) and not block.text.strip():
                return "messages: text content blocks must contain non-whitespace text"
            if isinstance(block, ToolUse | Thinking | RedactedThinking) and msg.role == "user":
                return f"{where}: `{block.type}` blocks can only be in `assistant` messages"
            if isinstance(block, ToolResult) and msg.role == "assistant":
                return f"{where}: `tool_result` blocks can only be in `user` messages"
        uses = [b.id for b in _blocks(messages[i - 1]) if isinstance(b, ToolUse)] if i else []
        results = [b for b in blocks if isinstance(b, ToolResult)]
        for j, block in enumerate(blocks):
            if isinstance(block, ToolResult) and block.tool_use_id not in uses:
                return (
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {block.tool_use_id}. Each `tool_result` block "
                    "must have a corresponding `tool_use` block in the previous message."
                )
        if uses and blocks[: len(results)] != results:
            return (
                f"messages.{i}: Did not find {len(uses)} `tool_result` block(s) at the "
                "beginning of this message. Messages following `tool_use` blocks must begin "
                "with a matching number of `tool_result` blocks."
            )
        answered = {b.tool_use_id for b in results}
        missing = [u for u in uses if u not in answered]
        if missing:
            return (
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
    final = messages[last]
    text = final.content if isinstance(final.content, str) else ""
    if not isinstance(final.content, str) and final.content:
        tail = final.content[-1]
        text = tail.text if isinstance(tail, Text) else ""
    if final.role == "assistant" and text != text.rstrip():
        return "messages: final assistant content cannot end with trailing whitespace"
    return None


# ----------------------------------------------------------------------------- the server


class FakeAnthropic(FakeUpstream):
    def __init__(
        self, api_key: str = "sk-ant-test", rate_limits: tuple[int, int] | None = None
    ) -> None:
        # (rpm, tpm): send anthropic-ratelimit-* headers with every answer (none unless)
        self.rate_limits = (
            None if rate_limits is None else RateLimitHeaders(*rate_limits, "anthropic")
        )
        super().__init__()
        self.api_key = api_key

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.messages)
        if self.rate_limits is not None:
            app.on_response_prepare.append(self.rate_limits.on_prepare)
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
        if not isinstance(body, dict):
            return _error(400, "Input should be a valid dictionary")
        refused = refusal(body)
        if refused:
            return _error(400, refused)
        model = body["model"]
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
