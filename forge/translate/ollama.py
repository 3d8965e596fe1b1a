"""OpenAI chat, completions and embeddings ⇄ Ollama's native API, provider side only.

Requests: ``to_ollama_chat`` (``POST /api/chat``), ``to_ollama_generate`` (``POST
/api/generate``, for ``/v1/completions``) and ``to_ollama_embed`` (``POST /api/embed``).
Answers: ``from_ollama_chat``, ``from_ollama_generate``, ``from_ollama_embed``; NDJSON
streams: ``OllamaChatStreamToOpenAI`` and ``OllamaGenerateStreamToOpenAI`` (one per stream).

Choices made where the two APIs differ:

* Ollama takes images only as base64, so ``image_url`` parts must be ``data:`` URLs; an
  ``http(s)`` URL is a 400 naming the part.
* Ollama cannot force a tool call: ``tool_choice`` ``"required"`` or a named function is a
  400; ``"none"`` is honoured by not sending the tools at all.
* ``stream`` is always sent explicitly (Ollama streams by default).
* Sampling options are sent only when the client set them, so a model's Modelfile
  defaults apply otherwise (Ollama's own OpenAI layer forces temperature and top_p to 1).
* ``/v1/completions`` goes to ``/api/generate`` with one text prompt (a one-element list
  is accepted); several prompts or token ids are a 400. The model's prompt template
  applies, as in Ollama's own OpenAI layer (no ``raw`` mode).
* Embeddings are sent with ``truncate: false``: over-long input is an error, as on
  OpenAI, rather than silently cut.
* ``message.thinking`` (reasoning models) has no Chat Completions counterpart and is
  dropped, as the Anthropic translator drops thinking blocks.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any

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

PROVIDER = "ollama"

DONE_TO_FINISH = {"stop": "stop", "length": "length"}  # "load", "unload", unknown: "stop"
UNSUPPORTED_CHAT = ("logprobs", "top_logprobs", "logit_bias", "audio", "modalities", "prediction")
UNSUPPORTED_COMPLETION = ("echo", "logprobs", "logit_bias")
THINK = {"none": False, "minimal": False, "low": "low", "medium": "medium", "high": "high"}


def call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


# ----------------------------------------------------------------------------- requests


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI sampling fields as Ollama ``options`` (only those the client set)."""
    options: dict[str, Any] = {}
    for field in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
        if body.get(field) is not None:
            options[field] = body[field]
    stop = body.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        options["num_predict"] = int(limit)
    return options


def _image(part: dict[str, Any], param: str) -> str:
    image = part.get("image_url") or {}
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequest("An image_url part needs a url.", param=param)
    data = parse_data_url(url, param)
    if data is None:
        raise unsupported(
            PROVIDER, param, "Ollama takes images as base64 data URLs only, not links"
        )
    return data[1]


def _content(content: Any, param: str) -> tuple[str, list[str]]:
    """(text, base64 images) of an OpenAI message content."""
    if isinstance(content, str):
        return content, []
    text: list[str] = []
    images: list[str] = []
    for i, part in enumerate(parts_of(content, param)):
        kind = part.get("type")
        if kind == "text":
            text.append(text_of([part]))
        elif kind == "image_url":
            images.append(_image(part, f"{param}[{i}]"))
        else:
            raise unsupported(PROVIDER, f"{param}[{i}].type", f"content part {kind!r}")
    return "".join(text), images


def _message(role: str, content: Any, param: str) -> dict[str, Any]:
    text, images = _content(content, f"{param}.content")
    out: dict[str, Any] = {"role": role, "content": text}
    if images:
        out["images"] = images
    return out


def _tool(tool: dict[str, Any], param: str) -> dict[str, Any]:
    fn = function_of(tool, param, PROVIDER)
    function: dict[str, Any] = {
        "name": fn["name"],
        "parameters": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        function["description"] = fn["description"]
    return {"type": "function", "function": function}


def _format(response_format: Any) -> Any:
    """Ollama's ``format`` for an OpenAI ``response_format`` (None: free text)."""
    if not response_format:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        json_schema = obj(response_format.get("json_schema"), "response_format.json_schema")
        return json_schema.get("schema") or "json"
    raise unsupported(PROVIDER, "response_format.type", f"response format {kind!r}")


def to_ollama_chat(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """An OpenAI chat completion request as an Ollama ``/api/chat`` body.
    Raises a 400 naming the field for what Ollama cannot do."""
    if (body.get("n") or 1) > 1:
        raise unsupported(PROVIDER, "n", "Ollama returns one choice per request")
    for field in UNSUPPORTED_CHAT:
        if body.get(field):
            raise unsupported(PROVIDER, field)
    choice = body.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise unsupported(
            PROVIDER, "tool_choice", "Ollama cannot force a tool call; use 'auto' or 'none'"
        )
    messages: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}  # tool_call_id → function name, for tool results
    for i, raw in enumerate(array(body.get("messages"), "messages")):
        param = f"messages[{i}]"
        msg = obj(raw, param)
        role = msg.get("role")
        if role in ("system", "developer"):
            messages.append(_message("system", msg.get("content"), param))
        elif role == "user":
            messages.append(_message("user", msg.get("content"), param))
        elif role == "assistant":
            out = _message("assistant", msg.get("content"), param)
            calls = []
            for j, raw_call in enumerate(array(msg.get("tool_calls"), f"{param}.tool_calls")):
                call = obj(raw_call, f"{param}.tool_calls[{j}]")
                name, args = called_function(call, f"{param}.tool_calls[{j}]", PROVIDER)
                ollama_call: dict[str, Any] = {"function": {"name": name, "arguments": args}}
                if call.get("id") and isinstance(call["id"], str):
                    ollama_call["id"] = call["id"]
                    tool_names[call["id"]] = name
                calls.append(ollama_call)
            if calls:
                out["tool_calls"] = calls
            messages.append(out)
        elif role == "tool":
            out = {"role": "tool", "content": text_of(msg.get("content"))}
            call = msg.get("tool_call_id")
            if call and isinstance(call, str):
                out["tool_call_id"] = call
                if call in tool_names:
                    out["tool_name"] = tool_names[call]
            messages.append(out)
        else:
            raise unsupported(PROVIDER, f"{param}.role", f"role {role!r}")
    request: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    tools = array(body.get("tools"), "tools")
    if tools and choice != "none":
        request["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    fmt = _format(body.get("response_format"))
    if fmt is not None:
        request["format"] = fmt
    options = _options(body)
    if options:
        request["options"] = options
    effort = body.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in THINK:
            raise InvalidRequest(
                f"Unsupported reasoning_effort {effort!r}.", param="reasoning_effort"
            )
        request["think"] = THINK[effort]
    return request


def to_ollama_generate(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """An OpenAI (legacy) completion request as an Ollama ``/api/generate`` body."""
    if (body.get("n") or 1) > 1:
        raise unsupported(PROVIDER, "n", "Ollama returns one choice per request")
    if (body.get("best_of") or 1) > 1:
        raise unsupported(PROVIDER, "best_of")
    for field in UNSUPPORTED_COMPLETION:
        if body.get(field):
            raise unsupported(PROVIDER, field)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise unsupported(
            PROVIDER, "prompt", "Ollama takes one text prompt per request, not a list or tokens"
        )
    request: dict[str, Any] = {"model": model, "prompt": prompt, "stream": stream}
    if body.get("suffix"):
        request["suffix"] = body["suffix"]
    options = _options(body)
    if options:
        request["options"] = options
    return request


def to_ollama_embed(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI embeddings request as an Ollama ``/api/embed`` body."""
    inputs = body.get("input")
    if not (
        isinstance(inputs, str)
        or (isinstance(inputs, list) and all(isinstance(x, str) for x in inputs))
    ):
        raise unsupported(PROVIDER, "input", "Ollama embeds text, not token ids")
    if (body.get("encoding_format") or "float") not in ("float", "base64"):
        raise InvalidRequest(
            "encoding_format must be 'float' or 'base64'.", param="encoding_format"
        )
    request: dict[str, Any] = {"model": model, "input": inputs, "truncate": False}
    if body.get("dimensions"):
        request["dimensions"] = int(body["dimensions"])
    return request


# ----------------------------------------------------------------------------- answers


def openai_usage(payload: dict[str, Any]) -> dict[str, int]:
    prompt = int(payload.get("prompt_eval_count") or 0)
    completion = int(payload.get("eval_count") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def openai_tool_call(call: dict[str, Any], index: int | None = None) -> dict[str, Any]:
    fn = call["function"]
    args = fn.get("arguments")
    out: dict[str, Any] = {
        "id": call.get("id") or call_id(),
        "type": "function",
        "function": {
            "name": fn.get("name", ""),
            "arguments": args if isinstance(args, str) else dumps(args or {}),
        },
    }
    if index is not None:
        out["index"] = index
    return out


def finish_reason(payload: dict[str, Any], tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    return DONE_TO_FINISH.get(payload.get("done_reason") or "stop", "stop")


def from_ollama_chat(payload: dict[str, Any], public_model: str) -> dict[str, Any]:
    """An Ollama ``/api/chat`` answer as an OpenAI chat completion."""
    message = payload["message"]
    calls = [openai_tool_call(c) for c in message.get("tool_calls") or ()]
    content = message.get("content") or ""
    reply: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else "")}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": public_model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(payload, bool(calls)),
            }
        ],
        "usage": openai_usage(payload),
    }


def from_ollama_generate(payload: dict[str, Any], public_model: str) -> dict[str, Any]:
    """An Ollama ``/api/generate`` answer as an OpenAI text completion."""
    text = payload["response"]
    if not isinstance(text, str):
        raise TypeError("response is not text")
    return {
        "id": "cmpl-" + uuid.uuid4().hex[:24],
        "object": "text_completion",
        "created": int(time.time()),
        "model": public_model,
        "choices": [
            {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason(payload, False),
            }
        ],
        "usage": openai_usage(payload),
    }


def base64_floats(vector: list[float]) -> str:
    """A vector as OpenAI's ``encoding_format: base64`` sends it: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def from_ollama_embed(
    payload: dict[str, Any], public_model: str, encoding_format: str | None = None
) -> dict[str, Any]:
    """An Ollama ``/api/embed`` answer as an OpenAI embeddings list."""
    vectors = payload["embeddings"]
    if not isinstance(vectors, list):
        raise TypeError("embeddings is not a list")
    encode = base64_floats if encoding_format == "base64" else list
    tokens = int(payload.get("prompt_eval_count") or 0)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(vectors)
        ],
        "model": public_model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# ----------------------------------------------------------------------------- streams


class _StreamToOpenAI:
    """Shared state of the NDJSON stream translators: ids, usage, the end."""

    object = ""
    id_prefix = ""

    def __init__(self, public_model: str) -> None:
        self.model = public_model
        self.id = self.id_prefix + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.usage: dict[str, int] | None = None
        self.finished = False
        self.started = False

    def usage_chunk(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage or openai_usage({}),
        }

    @staticmethod
    def check(line: dict[str, Any]) -> None:
        if "error" in line:
            error = line["error"]
            raise ValueError(error if isinstance(error, str) else dumps(error))


class OllamaChatStreamToOpenAI(_StreamToOpenAI):
    """``/api/chat`` NDJSON lines in, OpenAI chat completion chunks out.

    ``feed`` returns the chunks for one line: the first carries the role, lines with
    neither content nor tool calls (thinking, empty) give none, and the ``done`` line
    adds the finish chunk; ``usage_chunk`` is the final usage chunk. Raises ``ValueError``
    on an ``{"error": ...}`` line."""

    object = "chat.completion.chunk"
    id_prefix = "chatcmpl-"

    def __init__(self, public_model: str) -> None:
        super().__init__(public_model)
        self.tool_calls = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        self.check(line)
        message = line.get("message") or {}
        content = message.get("content") or ""
        delta: dict[str, Any] = {}
        if not self.started:
            self.started = True
            delta = {"role": "assistant", "content": content}
        elif content:
            delta = {"content": content}
        calls = message.get("tool_calls")
        if calls:
            delta["tool_calls"] = [
                openai_tool_call(c, self.tool_calls + i) for i, c in enumerate(calls)
            ]
            self.tool_calls += len(calls)
        out = [self._chunk(delta)] if delta else []
        if line.get("done"):
            self.finished = True
            self.usage = openai_usage(line)
            out.append(self._chunk({}, finish_reason(line, self.tool_calls > 0)))
        return out


class OllamaGenerateStreamToOpenAI(_StreamToOpenAI):
    """``/api/generate`` NDJSON lines in, OpenAI text completion chunks out."""

    object = "text_completion"
    id_prefix = "cmpl-"

    def _chunk(self, text: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        self.check(line)
        text = line.get("response") or ""
        out = [self._chunk(text)] if text else []
        self.started = self.started or bool(text)
        if line.get("done"):
            self.finished = True
            self.usage = openai_usage(line)
            out.append(self._chunk("", finish_reason(line, False)))
        return out
