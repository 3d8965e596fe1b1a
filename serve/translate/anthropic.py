"""OpenAI chat ⇄ Anthropic Messages, both ways.

Provider side (an Anthropic model behind the OpenAI API): ``to_anthropic_request``,
``from_anthropic_response``, ``AnthropicStreamToOpenAI``. Ingress side (any model behind
the Anthropic API, ``POST /v1/messages``): ``from_anthropic_request``,
``to_anthropic_response``, ``OpenAIStreamToAnthropic``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from forge.errors import InvalidRequest
from serve.translate.common import (
    dumps,
    function_of,
    parse_data_url,
    text_of,
    tool_arguments,
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


def _content_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image_block(part, f"{param}[{i}]"))
        else:
            raise unsupported(PROVIDER, f"{param}[{i}].type", f"content part {kind!r}")
    return blocks


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Anthropic wants user/assistant turns alternating: merge consecutive same-role turns."""
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
    for i, msg in enumerate(body["messages"]):
        role, param = msg.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(text_of(msg.get("content")))
        elif role == "user":
            _append(messages, "user", _content_blocks(msg.get("content"), f"{param}.content"))
        elif role == "assistant":
            blocks = _content_blocks(msg.get("content"), f"{param}.content")
            for j, call in enumerate(msg.get("tool_calls") or ()):
                fn = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": fn.get("name", ""),
                        "input": tool_arguments(fn.get("arguments"), f"{param}.tool_calls[{j}]"),
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
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    response_format = body.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        schema = (response_format.get("json_schema") or {}).get("schema")
        rule = "Respond with a single JSON object and nothing else."
        if schema:
            rule += " It must conform to this JSON Schema: " + dumps(schema)
        system.append(rule)
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)  # Anthropic accepts 0 to 1
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _tool(tool: dict[str, Any], param: str) -> dict[str, Any]:
    fn = function_of(tool, param, PROVIDER)
    out = {"name": fn["name"], "input_schema": fn.get("parameters") or {"type": "object"}}
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
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
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


def _openai_parts(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for block in content or ():
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            source = block.get("source") or {}
            if source.get("type") == "base64":
                url = f"data:{source.get('media_type')};base64,{source.get('data', '')}"
            else:
                url = source.get("url", "")
            parts.append({"type": "image_url", "image_url": {"url": url}})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or () if b.get("type") == "text")


def from_anthropic_request(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat completion request."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _result_text(system)})
    for msg in body.get("messages") or ():
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
        if role == "assistant":
            out: dict[str, Any] = {"role": "assistant", "content": _openai_parts(rest) or None}
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
            messages.append({"role": role, "content": _openai_parts(rest)})
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
