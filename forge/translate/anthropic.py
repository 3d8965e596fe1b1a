"""OpenAI chat ⇄ Anthropic Messages, both ways.

Provider side (an Anthropic model behind the OpenAI API): ``to_anthropic_request``,
``from_anthropic_response``, ``AnthropicStreamToOpenAI``. Ingress side (any model behind
the Anthropic API, ``POST /v1/messages``): ``from_anthropic_request``,
``to_anthropic_response``, ``OpenAIStreamToAnthropic``.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson

from forge.errors import InvalidRequest
from forge.translate.common import (
    array,
    called_function,
    dumps,
    function_of,
    obj,
    parse_data_url,
    parts_of,
    text_of,
    unsupported,
)

PROVIDER = "anthropic"
DEFAULT_MAX_TOKENS = 4096

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# ----------------------------------------------------------------------------- provider side


def _image_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    image = part.get("image_url") or {}
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequest("An image_url part needs a url.", param=param)
    data = parse_data_url(url, param)
    if data is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, b64 = data
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": b64}}


def _has_text(text: Any) -> bool:
    """Anthropic refuses empty and whitespace-only text blocks, which OpenAI accepts: they
    say nothing, so they are left out rather than sent to be refused."""
    return not isinstance(text, str) or bool(text.strip())


def _content_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if _has_text(content) else []
    blocks = []
    for i, part in enumerate(parts_of(content, param)):
        kind = part.get("type")
        if kind == "text":
            text = part.get("text", "")
            if _has_text(text):
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part, f"{param}[{i}]"))
        else:
            raise unsupported(PROVIDER, f"{param}[{i}].type", f"content part {kind!r}")
    return blocks


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Anthropic wants user/assistant turns alternating: merge consecutive same-role turns.
    A turn left with no blocks is dropped: Anthropic refuses empty turns."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def to_anthropic_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion request as an Anthropic Messages request.
    Raises a 400 naming the field for what Anthropic cannot do."""
    if (body.get("n") or 1) > 1:
        raise unsupported(PROVIDER, "n", "Anthropic returns one choice per request")
    for field in ("logprobs", "top_logprobs", "logit_bias", "audio", "modalities", "prediction"):
        if body.get(field):
            raise unsupported(PROVIDER, field)
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, raw in enumerate(array(body.get("messages"), "messages")):
        param = f"messages[{i}]"
        msg = obj(raw, param)
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(text_of(msg.get("content")))
        elif role == "user":
            _append(messages, "user", _content_blocks(msg.get("content"), f"{param}.content"))
        elif role == "assistant":
            blocks = _content_blocks(msg.get("content"), f"{param}.content")
            for j, raw_call in enumerate(array(msg.get("tool_calls"), f"{param}.tool_calls")):
                call = obj(raw_call, f"{param}.tool_calls[{j}]")
                name, arguments = called_function(call, f"{param}.tool_calls[{j}]", PROVIDER)
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": name,
                        "input": arguments,
                    }
                )
            _append(messages, "assistant", blocks)
        elif role == "tool":
            _append(
                messages,
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": msg.get("tool_call_id", ""),
                        "content": text_of(msg.get("content")),
                    }
                ],
            )
        else:
            raise unsupported(PROVIDER, f"{param}.role", f"role {role!r}")
    _trim_prefill(messages)
    if not messages:
        raise InvalidRequest(
            "Anthropic needs at least one user or assistant message with content; "
            "blank text is not sent.",
            param="messages",
        )
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    response_format = obj(body.get("response_format"), "response_format")
    if response_format.get("type") in ("json_object", "json_schema"):
        json_schema = obj(response_format.get("json_schema"), "response_format.json_schema")
        schema = json_schema.get("schema")
        rule = "Respond with a single JSON object and nothing else."
        if schema:
            rule += " It must conform to this JSON Schema: " + dumps(schema)
        system.append(rule)
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    out.update(_sampling(body, model))
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    tools = array(body.get("tools"), "tools")
    if tools:
        out["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _trim_prefill(messages: list[dict[str, Any]]) -> None:
    """Anthropic refuses a final assistant turn (a prefill) ending in whitespace."""
    if not messages or messages[-1]["role"] != "assistant":
        return
    blocks = messages[-1]["content"]
    if blocks[-1]["type"] == "text" and isinstance(blocks[-1]["text"], str):
        blocks[-1] = {**blocks[-1], "text": blocks[-1]["text"].rstrip()}
        if not blocks[-1]["text"]:
            blocks.pop()
    if not blocks:
        messages.pop()


_CLAUDE_VERSION = re.compile(r"claude-(opus|sonnet|haiku)-(\d+)(?:-(\d{1,2}))?(?!\d)")
ONE_SAMPLER_SINCE = {"opus": (4, 1), "sonnet": (4, 5), "haiku": (4, 5)}


def takes_one_sampler(model: str) -> bool:
    """Whether Anthropic refuses ``temperature`` together with ``top_p`` for this model id:
    Opus 4.1 and later, Sonnet and Haiku 4.5 and later (Bedrock and Vertex ids too).
    Older ids (``claude-sonnet-4-20250514``, ``claude-3-7-sonnet-…``) take both."""
    found = _CLAUDE_VERSION.search(model)
    if not found:
        return False
    version = (int(found[2]), int(found[3] or 0))
    return version >= ONE_SAMPLER_SINCE[found[1]]


def _sampling(body: dict[str, Any], model: str) -> dict[str, Any]:
    """``temperature`` (capped at Anthropic's 1) and ``top_p``. For the models that take
    only one of them, a ``top_p`` of 1 (the default, which many clients send unasked) is
    dropped, and any other pair is refused here rather than by Anthropic."""
    out: dict[str, Any] = {}
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if temperature is not None:
        out["temperature"] = min(float(temperature), 1.0)
    if top_p is None:
        return out
    if temperature is not None and takes_one_sampler(model):
        if top_p == 1:
            return out
        raise InvalidRequest(
            "This model takes `temperature` or `top_p`, not both: drop `top_p` to sample "
            "by temperature, or `temperature` to sample by top_p (a `top_p` of 1, the "
            "default, is dropped for you).",
            param="top_p",
            code="unsupported_parameter",
        )
    out["top_p"] = top_p
    return out


def _tool(tool: dict[str, Any], param: str) -> dict[str, Any]:
    fn = function_of(tool, param, PROVIDER)
    schema = fn.get("parameters") or {}
    if isinstance(schema, dict) and "type" not in schema:
        schema = {"type": "object", **schema}  # Anthropic requires it; OpenAI implies it
    out = {"name": fn["name"], "input_schema": schema}
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None and parallel is None:
        return None
    if choice in (None, "auto"):
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = obj(choice.get("function"), "tool_choice.function").get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                "tool_choice needs a function name.", param="tool_choice.function.name"
            )
        out = {"type": "tool", "name": name}
    else:
        raise InvalidRequest(f"Unsupported tool_choice {choice!r}.", param="tool_choice")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def openai_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage as OpenAI usage; cached prompt tokens are counted in the prompt."""
    usage = usage or {}
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cache_read + cache_write
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }


def from_anthropic_response(message: dict[str, Any], public_model: str) -> dict[str, Any]:
    """An Anthropic message as an OpenAI chat completion."""
    text, calls = [], []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": dumps(block.get("input") or {}),
                    },
                }
            )
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) if text or not calls else None,
    }
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + str(message.get("id", uuid.uuid4().hex)).removeprefix("msg_"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": public_model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": STOP_TO_FINISH.get(
                    message.get("stop_reason") or "end_turn", "stop"
                ),
            }
        ],
        "usage": openai_usage(message.get("usage")),
    }


class AnthropicStreamToOpenAI:
    """Anthropic SSE events in, OpenAI chat completion chunks out (one translator per stream)."""

    def __init__(self, public_model: str) -> None:
        self.model = public_model
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.finished = False
        self._tool_index: dict[int, int] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def usage_chunk(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": openai_usage(self.usage),
        }

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Chunks for one event. Raises ``ValueError`` on an ``error`` event."""
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self._tool_index.get(event.get("index", -1))
                if index is None:
                    return []
                return [
                    self._chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "function": {"arguments": delta.get("partial_json", "")},
                                }
                            ]
                        }
                    )
                ]
            return []  # thinking and signature deltas have no OpenAI counterpart
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use":
                return []
            index = len(self._tool_index)
            self._tool_index[event.get("index", index)] = index
            return [
                self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": block.get("id", ""),
                                "type": "function",
                                "function": {"name": block.get("name", ""), "arguments": ""},
                            }
                        ]
                    }
                )
            ]
        if kind == "message_start":
            message = event.get("message") or {}
            self.usage.update(message.get("usage") or {})
            if message.get("id"):
                self.id = "chatcmpl-" + str(message["id"]).removeprefix("msg_")
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                self.finished = True
                return [self._chunk({}, STOP_TO_FINISH.get(reason, "stop"))]
            return []
        if kind == "error":
            error = event.get("error") or {}
            raise ValueError(f"{error.get('type', 'error')}: {error.get('message', '')}")
        return []  # ping, content_block_stop, message_stop, unknown future events


# ----------------------------------------------------------------------------- ingress side


def _image_url(source: dict[str, Any]) -> str:
    if source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data', '')}"
    return source.get("url", "")


def _document_text(block: dict[str, Any]) -> str | None:
    """The text of a text document (with its title); None for a PDF, which OpenAI chat
    has no portable way to carry."""
    source = block.get("source") or {}
    if source.get("type") == "text":
        text = source.get("data", "")
    elif source.get("type") == "content":
        text = _result_text(source.get("content"))
    else:
        return None
    title = block.get("title")
    return f"{title}\n\n{text}" if title else text


def _openai_parts(content: Any, param: str) -> Any:
    """OpenAI content for an Anthropic message's text, image and document blocks (tool
    blocks are handled by the caller; thinking blocks have no OpenAI counterpart)."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content or ()):
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            url = _image_url(block.get("source") or {})
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "document":
            text = _document_text(block)
            if text is None:
                raise InvalidRequest(
                    "Only text documents (source type 'text' or 'content') can be served "
                    "through /v1/messages; this model cannot read a PDF.",
                    param=f"{param}[{j}].source",
                    code="unsupported_parameter",
                )
            parts.append({"type": "text", "text": text})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _result_text(content: Any) -> str:
    """The text of tool result or system content: a tool message carries text only."""
    if isinstance(content, str):
        return content
    out = []
    for block in content or ():
        text = block.get("text", "") if block.get("type") == "text" else None
        if block.get("type") == "document":
            text = _document_text(block)
        out.append(text or "")
    return "".join(out)


def from_anthropic_request(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat completion request."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _result_text(system)})
    for i, msg in enumerate(body.get("messages") or ()):
        role, content = msg.get("role"), msg.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        blocks = list(content or ())
        results = [b for b in blocks if b.get("type") == "tool_result"]
        for block in results:
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id", ""),
                    "content": _result_text(block.get("content")),
                }
            )
        uses = [b for b in blocks if b.get("type") == "tool_use"]
        rest = [b for b in blocks if b.get("type") not in ("tool_result", "tool_use")]
        param = f"messages[{i}].content"
        if role == "assistant":
            parts = _openai_parts(blocks, param)
            out: dict[str, Any] = {"role": "assistant", "content": parts or None}
            if uses:
                out["tool_calls"] = [
                    {
                        "id": b.get("id", ""),
                        "type": "function",
                        "function": {
                            "name": b.get("name", ""),
                            "arguments": dumps(b.get("input") or {}),
                        },
                    }
                    for b in uses
                ]
            messages.append(out)
        elif rest or not results:
            messages.append({"role": role, "content": _openai_parts(blocks, param)})
    out_body: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "max_tokens": body.get("max_tokens"),
    }
    if body.get("stop_sequences"):
        out_body["stop"] = list(body["stop_sequences"])
    for field in ("temperature", "top_p", "stream"):
        if body.get(field) is not None:
            out_body[field] = body[field]
    if body.get("stream"):
        out_body["stream_options"] = {"include_usage": True}
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out_body["user"] = user
    if body.get("tools"):
        out_body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name", ""),
                    **({"description": t["description"]} if t.get("description") else {}),
                    "parameters": t.get("input_schema") or {"type": "object"},
                },
            }
            for t in body["tools"]
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        out_body["tool_choice"] = {
            "auto": "auto",
            "any": "required",
            "none": "none",
        }.get(kind) or {"type": "function", "function": {"name": choice.get("name", "")}}
        if choice.get("disable_parallel_tool_use"):
            out_body["parallel_tool_calls"] = False
    return out_body


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0) - cached,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }


def to_anthropic_response(completion: dict[str, Any], public_model: str) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic message."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = text_of(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = {"_raw": fn.get("arguments")}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": fn.get("name", ""),
                "input": args,
            }
        )
    return {
        "id": "msg_" + str(completion.get("id", uuid.uuid4().hex)).removeprefix("chatcmpl-"),
        "type": "message",
        "role": "assistant",
        "model": public_model,
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(completion.get("usage")),
    }


def sse(event: dict[str, Any]) -> bytes:
    """One Anthropic SSE event (``event:`` line plus ``data:`` line)."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class OpenAIStreamToAnthropic:
    """OpenAI chat completion chunks in, Anthropic SSE events out."""

    def __init__(self, public_model: str) -> None:
        self.model = public_model
        self.started = False
        self.block: int = -1
        self.block_kind: str | None = None
        self.tool_blocks: dict[int, int] = {}
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] = {}

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        self.started = True
        return [
            sse(
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_"
                        + str(chunk.get("id", uuid.uuid4().hex)).removeprefix("chatcmpl-"),
                        "type": "message",
                        "role": "assistant",
                        "model": self.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 0, "output_tokens": 0},
                    },
                }
            )
        ]

    def _close_block(self) -> list[bytes]:
        if self.block_kind is None:
            return []
        self.block_kind = None
        return [sse({"type": "content_block_stop", "index": self.block})]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close_block()
        self.block += 1
        self.block_kind = kind
        return [
            *out,
            sse({"type": "content_block_start", "index": self.block, "content_block": block}),
        ]

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out = [] if self.started else self._start(chunk)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.block_kind != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out.append(
                    sse(
                        {
                            "type": "content_block_delta",
                            "index": self.block,
                            "delta": {"type": "text_delta", "text": delta["content"]},
                        }
                    )
                )
            for call in delta.get("tool_calls") or ():
                position = call.get("index", 0)
                fn = call.get("function") or {}
                if position not in self.tool_blocks:
                    out += self._open_block(
                        "tool_use",
                        {
                            "type": "tool_use",
                            "id": call.get("id", ""),
                            "name": fn.get("name", ""),
                            "input": {},
                        },
                    )
                    self.tool_blocks[position] = self.block
                if fn.get("arguments"):
                    out.append(
                        sse(
                            {
                                "type": "content_block_delta",
                                "index": self.tool_blocks[position],
                                "delta": {
                                    "type": "input_json_delta",
                                    "partial_json": fn["arguments"],
                                },
                            }
                        )
                    )
            if choice.get("finish_reason"):
                self.stop_reason = FINISH_TO_STOP.get(choice["finish_reason"], "end_turn")
        return out

    def finish(self) -> list[bytes]:
        out = [] if self.started else self._start({})
        out += self._close_block()
        usage = anthropic_usage(self.usage)
        out.append(
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": None},
                    "usage": {
                        "output_tokens": usage["output_tokens"],
                        "input_tokens": usage["input_tokens"],
                    },
                }
            )
        )
        out.append(sse({"type": "message_stop"}))
        return out
