"""OpenAI Responses ⇄ OpenAI chat, for the stateless ``POST /v1/responses`` ingress: any
model behind the platform answers a Responses request through its chat path.

``to_chat_request`` (a validated ``CreateResponse`` body as a chat completion request),
``to_response`` (a chat completion as a ``Response`` object) and ``ChatStreamToResponses``
(chat completion chunks in, Responses SSE events out); ``input_items`` (the request's
input as stored and listed, every item with an id). A conversation continued with
``previous_response_id`` arrives as ``history``: the stored items prepended to the input.
The Response echoes ``store`` and ``previous_response_id`` as the request's body says
(the route sets ``store`` to what it will really do). An output item's id holds its
response's (``item_id``), so that an ``item_reference`` to it leads the route to the
stored response to take it from (``response_of_item``, ``with_referenced``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from forge.errors import InvalidRequest
from forge.protocol.responses import is_reference

ItemParam = str  # the Responses param path a chat message came from


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def item_id(prefix: str, response_id: str, index: int) -> str:
    """An output item's id: the hex of its response's id, then its index in the output,
    so that an ``item_reference`` to it names the stored response that holds it."""
    return f"{prefix}_{response_id.removeprefix('resp_')}{index:04x}"


def response_of_item(reference: str) -> str | None:
    """The id of the response whose output holds the item ``reference`` names (an id
    made by ``item_id``), or None for an id of any other shape."""
    _, sep, rest = reference.partition("_")
    head = rest[:32]
    if not sep or len(rest) <= 32 or len(head.strip("0123456789abcdef")) != 0:
        return None
    return f"resp_{head}"


def references(body: dict[str, Any]) -> list[tuple[int, str]]:
    """The input's ``item_reference`` items: their index and the id they name."""
    items = body["input"]
    if isinstance(items, str):
        return []
    return [(i, item["id"]) for i, item in enumerate(items) if is_reference(item)]


def with_referenced(body: dict[str, Any], found: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The body with each ``item_reference`` of the input (by index) replaced by the stored
    item it names: the request as if the client had sent the item itself."""
    items = [found.get(i, item) for i, item in enumerate(body["input"])]
    return {**body, "input": items}


# ----------------------------------------------------------------------------- request


def _part(part: dict[str, Any], param: str) -> dict[str, Any]:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal":
        return {"type": "refusal", "refusal": part["refusal"]}
    url = part.get("image_url")
    if not url:
        raise InvalidRequest(
            "An input_image part needs an image_url: uploaded files (file_id) are not "
            "available on this platform.",
            param=f"{param}.image_url",
            code="unsupported_parameter",
        )
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("auto", "low", "high"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _content(content: Any, param: str, assistant: bool = False) -> Any:
    """Chat content for a message's content: a string where it is all text (every chat
    path takes that), else the parts one for one, so that indexes still match."""
    if isinstance(content, str):
        return content
    parts = [_part(p, f"{param}[{j}]") for j, p in enumerate(content)]
    if all(p["type"] == "text" for p in parts) or assistant:
        return "".join(p.get("text", "") for p in parts if p["type"] == "text")
    return parts


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return "".join(part["text"] for part in output)


def chat_messages(
    body: dict[str, Any], history: list[dict[str, Any]] | None = None
) -> tuple[list[dict[str, Any]], list[ItemParam]]:
    """The chat messages for the request's ``instructions``, the ``history`` of a
    continued conversation and ``input``, and for each the Responses param it came from
    (to name the client's field in a later 400)."""
    messages: list[dict[str, Any]] = []
    sources: list[ItemParam] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
        sources.append("instructions")
    items = body["input"]
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
        params = ["input"]
    else:
        params = [f"input[{i}]" for i in range(len(items))]
    pairs = [(item, "previous_response_id") for item in history or ()]
    for item, param in pairs + list(zip(items, params, strict=True)):
        kind = item.get("type", "message")
        if kind == "message":
            role = item["role"]
            content = _content(item["content"], f"{param}.content", role == "assistant")
            messages.append({"role": role, "content": content})
            sources.append(param)
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                if last["content"] == "":
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                sources.append(param)
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item["call_id"],
                    "content": _output_text(item["output"]),
                }
            )
            sources.append(param)
    return messages, sources


def check_call_outputs(body: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """A continued conversation's ``function_call_output`` items must answer a
    ``function_call`` of the stored conversation or of the input (the request model
    checks the input alone when there is no ``previous_response_id``)."""
    calls = {item["call_id"] for item in history if item.get("type") == "function_call"}
    items = body["input"] if isinstance(body["input"], list) else ()
    for i, item in enumerate(items):
        kind = item.get("type")
        if kind == "function_call":
            calls.add(item["call_id"])
        elif kind == "function_call_output" and item["call_id"] not in calls:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id {item['call_id']}.",
                param=f"input[{i}].call_id",
                code="invalid_value",
            )


def _stored_part(part: dict[str, Any], assistant: bool) -> dict[str, Any]:
    kind = part["type"]
    if assistant and kind in ("input_text", "output_text"):
        return text_part(part["text"])
    if kind == "input_text":
        return {"type": "input_text", "text": part["text"]}
    if kind == "input_image":
        image = {"type": "input_image", "detail": part.get("detail") or "auto"}
        for field in ("image_url", "file_id"):
            if part.get(field) is not None:
                image[field] = part[field]
        return image
    return dict(part)


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's input as OpenAI lists it (``input_items``): every item with its
    ``type``, an ``id`` (the client's, else a new one) and a ``status``; message content
    as parts (a string becomes one ``input_text``; an assistant's text, ``output_text``)."""
    raw = body["input"]
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    out: list[dict[str, Any]] = []
    for item in raw:
        kind = item.get("type", "message")
        if kind == "message":
            assistant = item["role"] == "assistant"
            content = item["content"]
            if isinstance(content, str):
                content = [{"type": "input_text", "text": content}]
            out.append(
                {
                    "id": item.get("id") or new_id("msg"),
                    "type": "message",
                    "role": item["role"],
                    "status": item.get("status") or "completed",
                    "content": [_stored_part(p, assistant) for p in content],
                }
            )
        elif kind == "function_call":
            out.append(
                function_call_item(
                    item.get("id") or new_id("fc"),
                    item["call_id"],
                    item["name"],
                    item["arguments"],
                    item.get("status") or "completed",
                )
            )
        elif kind == "function_call_output":
            output = item["output"]
            if not isinstance(output, str):
                output = [_stored_part(p, False) for p in output]
            out.append(
                {
                    "id": item.get("id") or new_id("fco"),
                    "type": "function_call_output",
                    "status": item.get("status") or "completed",
                    "call_id": item["call_id"],
                    "output": output,
                }
            )
    return out


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = (text or {}).get("format") or {}
    kind = fmt.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema: dict[str, Any] = {"name": fmt["name"], "schema": fmt["schema"]}
        for field in ("description", "strict"):
            if fmt.get(field) is not None:
                schema[field] = fmt[field]
        return {"type": "json_schema", "json_schema": schema}
    return None


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool["name"]}
    for field in ("description", "parameters", "strict"):
        if tool.get(field) is not None:
            fn[field] = tool[field]
    return {"type": "function", "function": fn}


def to_chat_request(
    body: dict[str, Any], history: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A validated Responses request (``forge.protocol.responses``) as a chat completion
    request, after the ``history`` of the conversation it continues. ``max_output_tokens``
    becomes ``max_completion_tokens``, the field every chat path of the platform reads
    first (and the one OpenAI's reasoning models take)."""
    messages, _ = chat_messages(body, history)
    if not messages:
        raise InvalidRequest(
            "The request has no input: give `input` at least one item.", param="input"
        )
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    for field in (
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "prompt_cache_key",
    ):
        if body.get(field) is not None:
            chat[field] = body[field]
    if body.get("tools"):
        chat["tools"] = [_chat_tool(t) for t in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None:
        chat["tool_choice"] = choice
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    verbosity = (body.get("text") or {}).get("verbosity")
    if verbosity is not None:
        chat["verbosity"] = verbosity
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        # the chat path treats it as for a chat request: passed through to an OpenAI
        # compatible upstream, Ollama's ``think``, not read by the Anthropic and Gemini
        # translators (summaries, which chat cannot return, are not asked for)
        chat["reasoning_effort"] = effort
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def responses_param(
    param: str | None, body: dict[str, Any], history: list[dict[str, Any]] | None = None
) -> str | None:
    """The Responses spelling of a chat request's ``param`` (from a 400 the chat path
    raised on the translated request): ``messages[2].content[0]`` → ``input[1].content[0]``."""
    if param is None:
        return None
    renames = {
        "response_format": "text.format",
        "max_completion_tokens": "max_output_tokens",
        "max_tokens": "max_output_tokens",
        "reasoning_effort": "reasoning.effort",
        "verbosity": "text.verbosity",
    }
    if param.startswith("response_format.json_schema."):  # Responses flattens json_schema
        return "text.format." + param.removeprefix("response_format.json_schema.")
    head, dot, rest = param.partition(".")
    if head in renames:
        return renames[head] + dot + rest
    if param == "messages":
        return "input"
    if not param.startswith("messages["):
        return param
    index, _, tail = param.removeprefix("messages[").partition("]")
    _, sources = chat_messages(body, history)
    if not index.isdigit() or int(index) >= len(sources):
        return param
    source = sources[int(index)]
    if source in ("instructions", "input", "previous_response_id"):
        return source
    return source + tail


# ----------------------------------------------------------------------------- response


def response_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def _set_usage(response: dict[str, Any], usage: dict[str, Any] | None) -> None:
    """The spec's ``usage`` is an object or absent (not null): left out when unknown."""
    converted = response_usage(usage)
    if converted is not None:
        response["usage"] = converted


INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as the Response echoes it; ``strict`` is as sent (false when left
    out: the chat path does not enforce schemas unasked, unlike OpenAI's Responses)."""
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": bool(tool.get("strict")),
    }


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _echo_reasoning(reasoning: dict[str, Any] | None) -> dict[str, Any]:
    """``reasoning`` as the Response echoes it, OpenAI's way (both fields, null when not
    set): the effort as asked, ``summary`` null whatever was asked, since no summary is
    produced (see ``forge.protocol.responses.ReasoningParam``)."""
    return {"effort": (reasoning or {}).get("effort"), "summary": None}


def base_response(
    request: dict[str, Any], response_id: str, created_at: int | None = None
) -> dict[str, Any]:
    """A Response in progress: the request's settings echoed, no output yet."""
    text = request.get("text") or {}
    echoed_text: dict[str, Any] = {"format": text.get("format") or {"type": "text"}}
    if text.get("verbosity") is not None:
        echoed_text["verbosity"] = text["verbosity"]
    out: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": "in_progress",
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": request["model"],
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": _echo_reasoning(request.get("reasoning")),
        "store": request.get("store") is not False,
        "temperature": _or(request.get("temperature"), 1.0),
        "text": echoed_text,
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": [_echo_tool(t) for t in request.get("tools") or ()],
        "top_p": _or(request.get("top_p"), 1.0),
        "truncation": "disabled",
        "metadata": request.get("metadata") or {},
    }
    if request.get("user") is not None:
        out["user"] = request["user"]
    return out


def _finish(response: dict[str, Any], finish_reason: str | None) -> None:
    reason = INCOMPLETE.get(finish_reason or "")
    if reason is None:
        response["status"] = "completed"
        response["completed_at"] = int(time.time())
    else:
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": reason}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def to_response(completion: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as a ``Response`` object for the Responses request it answers."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    finish_reason = choice.get("finish_reason")
    item_status = "incomplete" if finish_reason in INCOMPLETE else "completed"
    # the platform's own id, never the upstream's: stored responses are keyed by it
    response = base_response(request, new_id("resp"), completion.get("created"))
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content:
        parts.append(text_part(content))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    output: list[dict[str, Any]] = []
    if parts:
        output.append(message_item(item_id("msg", response["id"], 0), parts, item_status))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        output.append(
            function_call_item(
                item_id("fc", response["id"], len(output)),
                call.get("id") or new_id("call"),
                fn.get("name", ""),
                fn.get("arguments") or "",
                item_status,
            )
        )
    response["output"] = output
    _set_usage(response, completion.get("usage"))
    _finish(response, finish_reason)
    return response


# ----------------------------------------------------------------------------- stream


def sse(event: dict[str, Any]) -> bytes:
    """One Responses SSE event, framed as OpenAI sends them."""
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


STREAM_ERROR_CODES = {"rate_limit_exceeded": "rate_limit_exceeded"}


class ChatStreamToResponses:
    """OpenAI chat completion chunks in, Responses SSE events out: ``response.created``
    and ``response.in_progress`` first; per output item ``output_item.added``, its
    content part or argument deltas, ``output_item.done``; then ``response.completed``
    (``response.incomplete`` when the model ran out of tokens), or ``response.failed``
    when the chat stream carried an error. Every event has its ``sequence_number``."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.response = base_response(request, new_id("resp"))
        self.sequence = 0
        self.started = False
        self.ended = False
        self.items: list[dict[str, Any]] = []  # output items, open or done
        self.open: int | None = None  # output index of the item being streamed
        self.calls: dict[int, int] = {}  # chat tool call index → output index
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(event)

    def _item_id(self, prefix: str) -> str:
        """The id of the output item about to be added."""
        return item_id(prefix, self.response["id"], len(self.items))

    def _snapshot(self) -> dict[str, Any]:
        return orjson.loads(orjson.dumps(self.response))  # type: ignore[no-any-return]

    def _start(self) -> list[bytes]:
        self.started = True
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    def _close(self, status: str = "completed") -> list[bytes]:
        if self.open is None:
            return []
        index, item = self.open, self.items[self.open]
        self.open = None
        item["status"] = status
        out = []
        if item["type"] == "message":
            part = item["content"][0]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out.append(
                self._event("response.output_text.done", **where, text=part["text"], logprobs=[])
            )
            out.append(self._event("response.content_part.done", **where, part=part))
        else:
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _add(self, item: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.items.append(item)
        self.open = len(self.items) - 1
        added = {**item, "content": []} if item["type"] == "message" else item
        out.append(self._event("response.output_item.added", output_index=self.open, item=added))
        return out

    def _text(self, delta: str) -> list[bytes]:
        out: list[bytes] = []
        if self.open is None or self.items[self.open]["type"] != "message":
            out += self._add(message_item(self._item_id("msg"), [text_part("")], "in_progress"))
            where = {"item_id": self.items[-1]["id"], "output_index": self.open, "content_index": 0}
            out.append(self._event("response.content_part.added", **where, part=text_part("")))
        assert self.open is not None
        item = self.items[self.open]
        item["content"][0]["text"] += delta
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=self.open,
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return out

    def _call(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        position = call.get("index", 0)
        fn = call.get("function") or {}
        if position not in self.calls:
            out += self._add(
                function_call_item(
                    self._item_id("fc"),
                    call.get("id") or new_id("call"),
                    fn.get("name") or "",
                    "",
                    "in_progress",
                )
            )
            self.calls[position] = len(self.items) - 1
        index = self.calls[position]
        item = self.items[index]
        if fn.get("arguments"):
            item["arguments"] += fn["arguments"]
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=fn["arguments"],
                )
            )
        return out

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        if self.ended:
            return []
        out = [] if self.started else self._start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text(delta["content"])
            for call in delta.get("tool_calls") or ():
                out += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def finish(self) -> list[bytes]:
        """The chat stream's ``[DONE]``: close the open item, then the response."""
        return self.conclude() + self.final_event()

    def conclude(self) -> list[bytes]:
        """``finish`` up to its final event: the open item closed, ``response`` final
        (``status`` completed or incomplete). The route stores ``response`` here, then
        sends ``final_event`` (or, when it could not be stored, ``error_event``)."""
        if self.ended:
            return []
        out = [] if self.started else self._start()
        incomplete = self.finish_reason in INCOMPLETE
        out += self._close("incomplete" if incomplete else "completed")
        self.ended = True
        self.response["output"] = self.items
        _set_usage(self.response, self.usage)
        _finish(self.response, self.finish_reason)
        return out

    def final_event(self) -> list[bytes]:
        """``response.completed`` (``response.incomplete``) after ``conclude``."""
        if self.response["status"] not in ("completed", "incomplete"):
            return []
        kind = f"response.{self.response['status']}"
        return [self._event(kind, response=self.response)]

    def error_event(self, code: str, message: str) -> list[bytes]:
        """The stream's ``error`` event, in place of the final event."""
        return [self._event("error", code=code, message=message, param=None)]

    def fail(self, error: dict[str, Any]) -> list[bytes]:
        """An error in the chat stream (OpenAI's ``{"error": {...}}`` shape): the items
        so far are left incomplete and the response ends ``failed``."""
        if self.ended:
            return []
        out = [] if self.started else self._start()
        self.ended = True
        for item in self.items:
            if item["status"] == "in_progress":
                item["status"] = "incomplete"
        self.open = None
        code = error.get("code") if error.get("code") in STREAM_ERROR_CODES else "server_error"
        self.response["status"] = "failed"
        self.response["output"] = self.items
        _set_usage(self.response, self.usage)
        self.response["error"] = {"code": code, "message": str(error.get("message") or "")}
        out.append(self._event("response.failed", response=self.response))
        return out
