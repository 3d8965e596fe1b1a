"""OpenAI chat and embeddings ⇄ Google Gemini (the Gemini Developer API's REST shapes).

Provider side only (a Gemini model behind the OpenAI API): ``to_gemini_request``,
``from_gemini_response``, ``GeminiStreamToOpenAI`` for ``generateContent`` and
``streamGenerateContent?alt=sse``; ``to_gemini_embed_request`` and
``from_gemini_embed_response`` for ``batchEmbedContents``, the method google-genai itself
calls for ``embed_content`` on the Developer API (one request per input, so a list of
strings is one upstream call).

Requests are written in camelCase, as google-genai sends them; responses are read in
either case (the REST API answers in camelCase, snake_case appears in recorded fixtures
and SDK dumps). JSON Schemas go out as ``parametersJsonSchema`` / ``responseJsonSchema``,
which take JSON Schema as OpenAI clients write it; the older ``parameters`` /
``responseSchema`` take an OpenAPI subset and reject keys such as ``additionalProperties``
that strict OpenAI schemas always carry.

Gemini 3 models sign their function calls (``thoughtSignature``) and refuse a later turn
whose function calls lost their signature, so a signature rides inside the OpenAI tool
call id (``call_<hex>__sig__<signature>``, URL-safe base64 so that the id stays within
``[A-Za-z0-9_-]``), the one field every OpenAI client sends back.
"""

from __future__ import annotations

import base64
import mimetypes
import re
import struct
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

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

PROVIDER = "gemini"
SIGNATURE_MARK = "__sig__"

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "CONTINUATION": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
    "ESCALATION": "content_filter",
    "PUP_LIMITED_DISABLED": "content_filter",
}
# Everything else (OTHER, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, ...) reads as "stop".

UNSUPPORTED_FIELDS = (
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "audio",
    "prediction",
    "functions",
    "function_call",
    "web_search_options",
)
AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}
MODEL_ID = re.compile(r"^(?:models/|tunedModels/)?[A-Za-z0-9][\w.@-]*$")


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """A response field under its camelCase (REST) or snake_case name."""
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def model_path(model: Any) -> str:
    """The resource name of a model (``models/{id}``) for the request path; a 400 for
    names that could escape the path."""
    if not isinstance(model, str) or not MODEL_ID.match(model) or ".." in model:
        raise InvalidRequest(f"Invalid Gemini model name {model!r}.", param="model")
    if model.startswith(("models/", "tunedModels/")):
        return model
    return "models/" + model


# ----------------------------------------------------------------------------- requests


def _inline(media_type: str, data: str) -> dict[str, Any]:
    return {"inlineData": {"mimeType": media_type, "data": data}}


def _image_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    image = part.get("image_url") or {}
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequest("An image_url part needs a url.", param=param)
    data = parse_data_url(url, param)
    if data is not None:
        return _inline(*data)
    if url.startswith(("https://", "http://")):
        file_data = {"fileUri": url}
        media_type = mimetypes.guess_type(urlsplit(url).path)[0]
        if media_type:
            file_data["mimeType"] = media_type
        return {"fileData": file_data}
    raise InvalidRequest("Image URLs must be http(s) URLs or base64 data URLs.", param=param)


def _file_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    file = obj(part.get("file"), f"{param}.file")
    raw = file.get("file_data")
    if not isinstance(raw, str) or not raw:
        raise unsupported(PROVIDER, f"{param}.file", "send the file inline as file_data")
    data = parse_data_url(raw, param)
    if data is not None:
        return _inline(*data)
    media_type = mimetypes.guess_type(str(file.get("filename") or ""))[0]
    if media_type is None:
        raise InvalidRequest(
            "file_data needs a data: URL or a filename with a known extension.", param=param
        )
    return _inline(media_type, raw)


def _parts(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(parts_of(content, param)):
        kind = part.get("type")
        where = f"{param}[{i}]"
        if kind == "text":
            if part.get("text") and isinstance(part["text"], str):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image_part(part, where))
        elif kind == "input_audio":
            audio = obj(part.get("input_audio"), f"{where}.input_audio")
            audio_format = audio.get("format")
            media_type = AUDIO_TYPES.get(audio_format) if isinstance(audio_format, str) else None
            if media_type is None or not audio.get("data"):
                raise InvalidRequest("input_audio needs data and a wav or mp3 format.", param=where)
            parts.append(_inline(media_type, audio["data"]))
        elif kind == "file":
            parts.append(_file_part(part, where))
        else:
            raise unsupported(PROVIDER, f"{where}.type", f"content part {kind!r}")
    return parts


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    """Gemini wants user and model turns alternating, and the answers to parallel function
    calls in one turn: merge consecutive same-role turns."""
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """(id, thought signature in standard base64) of a tool call id this translator made."""
    head, mark, signature = call_id.partition(SIGNATURE_MARK)
    if not mark or not signature:
        return call_id, None
    signature = signature.replace("-", "+").replace("_", "/")
    return head, signature + "=" * (-len(signature) % 4)


def _function_call_part(call: dict[str, Any], param: str) -> tuple[str, dict[str, Any]]:
    name, arguments = called_function(call, param, PROVIDER)
    part: dict[str, Any] = {"functionCall": {"name": name, "args": arguments}}
    signature = _signature(call, param) or split_call_id(str(call.get("id") or ""))[1]
    if signature:
        part["thoughtSignature"] = signature
    return name, part


def _signature(call: dict[str, Any], param: str) -> str | None:
    """The thought signature a client sent back as Gemini's OpenAI layer returns it,
    ``extra_content.google.thought_signature``: a field OpenAI's schema does not know."""
    where = f"{param}.extra_content"
    google = obj(obj(call.get("extra_content"), where).get("google"), f"{where}.google")
    signature = google.get("thought_signature")
    if signature is not None and not isinstance(signature, str):
        raise InvalidRequest(
            "A thought signature must be a string.", param=f"{where}.google.thought_signature"
        )
    return signature


def _function_response(content: Any) -> dict[str, Any]:
    """A tool message's content as the JSON object Gemini wants: a JSON object as is,
    anything else under ``output``."""
    text = text_of(content)
    if text.startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"output": text}


def _declarations(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        fn = function_of(tool, f"tools[{i}]", PROVIDER)
        declaration: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            declaration["description"] = fn["description"]
        if fn.get("parameters"):
            declaration["parametersJsonSchema"] = fn["parameters"]
        out.append(declaration)
    return out


def _chosen(choice: dict[str, Any], param: str) -> str:
    """The function name a tool choice (or an allowed tool) names."""
    name = obj(choice.get("function"), f"{param}.function").get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("A chosen tool needs a function name.", param=f"{param}.function.name")
    return name


def _tool_config(
    choice: Any, declarations: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(toolConfig, declarations to send) for an OpenAI ``tool_choice``."""
    if choice is None:
        return None, declarations
    names: list[str] | None = None
    if choice == "auto":
        mode = "AUTO"
    elif choice == "none":
        mode = "NONE"
    elif choice == "required":
        mode = "ANY"
    elif isinstance(choice, dict) and choice.get("type") == "function":
        mode, names = "ANY", [_chosen(choice, "tool_choice")]
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = obj(choice.get("allowed_tools"), "tool_choice.allowed_tools")
        where = "tool_choice.allowed_tools.tools"
        names = [
            _chosen(obj(tool, f"{where}[{k}]"), f"{where}[{k}]")
            for k, tool in enumerate(array(allowed.get("tools"), where))
        ]
        if allowed.get("mode", "auto") == "required":
            mode = "ANY"
        else:  # Gemini restricts names only in ANY mode: in AUTO, offer only those tools
            mode = "AUTO"
            declarations = [d for d in declarations if d["name"] in names]
            names = None
    else:
        raise InvalidRequest(f"Unsupported tool_choice {choice!r}.", param="tool_choice")
    if mode != "NONE" and not declarations:
        raise InvalidRequest("tool_choice names a tool but no tools were given.", param="tools")
    known = {d["name"] for d in declarations}
    if names is not None and not set(names) <= known:
        raise InvalidRequest("tool_choice names a tool that is not in tools.", param="tool_choice")
    config: dict[str, Any] = {"mode": mode}
    if names is not None:
        config["allowedFunctionNames"] = names
    return {"functionCallingConfig": config}, declarations


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for field, key in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(field) is not None:
            config[key] = body[field]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    n = body.get("n")
    if n is not None and n != 1:
        config["candidateCount"] = n
    response_format = obj(body.get("response_format"), "response_format")
    kind = response_format.get("type", "text")
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        json_schema = obj(response_format.get("json_schema"), "response_format.json_schema")
        schema = json_schema.get("schema")
        if kind == "json_schema" and schema:
            config["responseJsonSchema"] = schema
    elif kind != "text":
        raise InvalidRequest(
            f"Unsupported response_format type {kind!r}.", param="response_format.type"
        )
    return config


def to_gemini_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion request as a ``generateContent`` body (the model goes in
    the path). Raises a 400 naming the field for what Gemini cannot do."""
    for field in UNSUPPORTED_FIELDS:
        if body.get(field):
            raise unsupported(PROVIDER, field)
    modalities = body.get("modalities")
    if modalities and list(modalities) != ["text"]:
        raise unsupported(PROVIDER, "modalities", "only text output")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, raw in enumerate(array(body.get("messages"), "messages")):
        param = f"messages[{i}]"
        msg = obj(raw, param)
        role = msg.get("role")
        if role in ("system", "developer"):
            text = text_of(msg.get("content"))
            if text:
                system.append({"text": text})
        elif role == "user":
            _append(contents, "user", _parts(msg.get("content"), f"{param}.content"))
        elif role == "assistant":
            parts = [{"text": text}] if (text := text_of(msg.get("content"))) else []
            for j, raw_call in enumerate(array(msg.get("tool_calls"), f"{param}.tool_calls")):
                call = obj(raw_call, f"{param}.tool_calls[{j}]")
                name, part = _function_call_part(call, f"{param}.tool_calls[{j}]")
                parts.append(part)
                if call.get("id"):
                    call_names[str(call["id"])] = name
            _append(contents, "model", parts)
        elif role == "tool":
            call_id = str(msg.get("tool_call_id") or "")
            name = call_names.get(call_id) or msg.get("name")  # ``name``: not OpenAI's field
            if not name or not isinstance(name, str):
                raise InvalidRequest(
                    f"Tool message answers no earlier assistant tool call {call_id!r}; "
                    "Gemini needs the function's name.",
                    param=f"{param}.tool_call_id",
                )
            response = _function_response(msg.get("content"))
            _append(contents, "user", [{"functionResponse": {"name": name, "response": response}}])
        else:
            raise unsupported(PROVIDER, f"{param}.role", f"role {role!r}")
    if not contents:
        raise InvalidRequest(
            "Gemini needs at least one user or assistant message.", param="messages"
        )
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = array(body.get("tools"), "tools")
    if tools:
        tool_config, declarations = _tool_config(body.get("tool_choice"), _declarations(tools))
        out["tools"] = [{"functionDeclarations": declarations}]
        if tool_config is not None:
            out["toolConfig"] = tool_config
    elif body.get("tool_choice") not in (None, "none", "auto"):
        raise InvalidRequest("tool_choice needs tools.", param="tool_choice")
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


# ----------------------------------------------------------------------------- responses


def finish_reason(reason: str | None, has_calls: bool) -> str:
    finish = FINISH_REASONS.get(reason or "STOP", "stop")
    return "tool_calls" if has_calls and finish == "stop" else finish


def new_call_id(signature: str | None = None) -> str:
    call_id = "call_" + uuid.uuid4().hex[:24]
    if not signature:
        return call_id
    return call_id + SIGNATURE_MARK + signature.replace("+", "-").replace("/", "_").rstrip("=")


def _tool_call(part: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": new_call_id(_get(part, "thoughtSignature", "thought_signature")),
        "type": "function",
        "function": {"name": call.get("name", ""), "arguments": dumps(call.get("args") or {})},
    }


def _read_parts(candidate: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """(texts, OpenAI tool calls) of a candidate; thoughts and other part kinds skipped."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    content = candidate.get("content") or {}
    for part in content.get("parts") or ():
        if part.get("thought"):
            continue
        text = part.get("text")
        if text is not None:
            texts.append(text)
            continue
        call = _get(part, "functionCall", "function_call")
        if call is not None:
            calls.append(_tool_call(part, call))
    return texts, calls


def _count(meta: dict[str, Any], camel: str, snake: str) -> int:
    return int(_get(meta, camel, snake) or 0)


def openai_usage(meta: dict[str, Any]) -> dict[str, Any]:
    """Gemini ``usageMetadata`` as OpenAI usage: thinking tokens are completion tokens (they
    are billed as output), tool-use prompt tokens are prompt tokens."""
    prompt = _count(meta, "promptTokenCount", "prompt_token_count") + _count(
        meta, "toolUsePromptTokenCount", "tool_use_prompt_token_count"
    )
    thoughts = _count(meta, "thoughtsTokenCount", "thoughts_token_count")
    completion = _count(meta, "candidatesTokenCount", "candidates_token_count") + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": _count(meta, "totalTokenCount", "total_token_count") or prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": _count(meta, "cachedContentTokenCount", "cached_content_token_count")
        },
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def _completion_id(payload: dict[str, Any]) -> str:
    response_id = _get(payload, "responseId", "response_id")
    return "chatcmpl-" + (str(response_id) if response_id else uuid.uuid4().hex[:24])


def _blocked(payload: dict[str, Any]) -> bool:
    feedback = _get(payload, "promptFeedback", "prompt_feedback") or {}
    return bool(_get(feedback, "blockReason", "block_reason"))


def from_gemini_response(payload: dict[str, Any], public_model: str) -> dict[str, Any]:
    """A ``GenerateContentResponse`` as an OpenAI chat completion. A blocked prompt (no
    candidates) is one empty choice that finished with ``content_filter``. Raises
    ``ValueError`` for a response with neither candidates nor a block reason."""
    candidates = payload.get("candidates")
    choices = []
    if candidates:
        for candidate in candidates:
            texts, calls = _read_parts(candidate)
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(texts) if texts or not calls else None,
            }
            if calls:
                message["tool_calls"] = calls
            reason = _get(candidate, "finishReason", "finish_reason")
            choices.append(
                {
                    "index": int(candidate.get("index") or 0),
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(reason, bool(calls)),
                }
            )
        choices.sort(key=lambda c: c["index"])
    elif _blocked(payload):
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": "content_filter",
            }
        )
    else:
        raise ValueError("a response with neither candidates nor a block reason")
    out: dict[str, Any] = {
        "id": _completion_id(payload),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": public_model,
        "choices": choices,
    }
    meta = _get(payload, "usageMetadata", "usage_metadata")
    if meta:
        out["usage"] = openai_usage(meta)
    return out


class GeminiStreamToOpenAI:
    """``streamGenerateContent`` chunks (each a whole ``GenerateContentResponse``) in, OpenAI
    chat completion chunks out; one translator per stream. Each choice's first chunk
    carries the role; a finish reason gets a chunk of its own; ``usage_chunk`` gives the
    last ``usageMetadata`` seen (Gemini repeats it, growing, on every chunk)."""

    def __init__(self, public_model: str) -> None:
        self.model = public_model
        self.id = ""
        self.created = int(time.time())
        self.usage: dict[str, Any] | None = None
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._tool_calls: dict[int, int] = {}

    @property
    def finished(self) -> bool:
        """Whether every choice the stream opened got its finish reason."""
        return bool(self._finished) and self._started <= self._finished

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }

    def feed(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        if not self.id:
            self.id = _completion_id(payload)
        meta = payload.get("usageMetadata") or payload.get("usage_metadata")
        if meta:
            self.usage = meta
        candidates = payload.get("candidates")
        if not candidates:
            if _blocked(payload) and 0 not in self._finished:
                self._started.add(0)
                self._finished.add(0)
                return [
                    self._chunk(0, {"role": "assistant", "content": ""}, None),
                    self._chunk(0, {}, "content_filter"),
                ]
            return []
        out = []
        for candidate in candidates:
            index = int(candidate.get("index") or 0)
            delta: dict[str, Any] = {}
            if index not in self._started:
                self._started.add(index)
                delta["role"] = "assistant"
            texts, calls = _read_parts(candidate)
            if texts:
                delta["content"] = "".join(texts)
            elif "role" in delta and not calls:
                delta["content"] = ""
            if calls:
                first = self._tool_calls.get(index, 0)
                self._tool_calls[index] = first + len(calls)
                delta["tool_calls"] = [{"index": first + k, **c} for k, c in enumerate(calls)]
            if delta:
                out.append(self._chunk(index, delta, None))
            reason = _get(candidate, "finishReason", "finish_reason")
            if reason and index not in self._finished:
                self._finished.add(index)
                finish = finish_reason(reason, index in self._tool_calls)
                out.append(self._chunk(index, {}, finish))
        return out

    def usage_chunk(self) -> dict[str, Any] | None:
        """The final chunk carrying usage (``choices`` empty); None if Gemini never said."""
        if self.usage is None:
            return None
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": openai_usage(self.usage),
        }


# ----------------------------------------------------------------------------- embeddings


def embed_inputs(body: dict[str, Any]) -> list[str]:
    """The texts of an OpenAI embeddings request (token arrays are a 400)."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        return raw
    if isinstance(raw, list) and raw and all(isinstance(x, int | list) for x in raw):
        raise unsupported(PROVIDER, "input", "token arrays; send text")
    raise InvalidRequest("'input' must be a string or a non-empty list of strings.", param="input")


def to_gemini_embed_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI embeddings request as a ``batchEmbedContents`` body."""
    encoding = body.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise InvalidRequest(f"Unsupported encoding_format {encoding!r}.", param="encoding_format")
    name = model_path(model)
    extra: dict[str, Any] = {}
    if body.get("dimensions"):
        extra["outputDimensionality"] = body["dimensions"]
    return {
        "requests": [
            {"model": name, "content": {"parts": [{"text": text}]}, **extra}
            for text in embed_inputs(body)
        ]
    }


def _encode(values: list[float], encoding: str | None) -> Any:
    if encoding == "base64":  # what OpenAI sends: little-endian float32, base64
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def from_gemini_embed_response(
    payload: dict[str, Any], public_model: str, encoding: str | None = None
) -> dict[str, Any]:
    """A ``batchEmbedContents`` (or ``embedContent``) answer as an OpenAI embeddings list.
    Usage is there only when Gemini reported it. Raises ``ValueError`` if no vectors."""
    embeddings = payload.get("embeddings")
    if embeddings is None and isinstance(payload.get("embedding"), dict):
        embeddings = [payload["embedding"]]
    if not isinstance(embeddings, list) or not embeddings:
        raise ValueError("an embeddings answer without embeddings")
    out: dict[str, Any] = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(e["values"], encoding)}
            for i, e in enumerate(embeddings)
        ],
        "model": public_model,
    }
    meta = _get(payload, "usageMetadata", "usage_metadata")
    if meta:
        prompt = _count(meta, "promptTokenCount", "prompt_token_count")
        out["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
    return out
