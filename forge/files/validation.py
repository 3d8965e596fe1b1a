"""Streaming validation of uploaded JSONL files against their Files API purpose.

``POST /v1/files`` streams an upload to storage chunk by chunk, so the validator is fed the
same chunks: it buffers only the current partial line (never past ``max_line_bytes``) and
remembers little else (the batch ``custom_id`` values, to catch duplicates). A rejected
upload should say exactly which line is wrong and why, the way OpenAI's own checks do, so
every error carries a 1-based line number and a JSON path (``messages[3].weight``).

The per-line checks are plain dict and type tests on what ``orjson`` returns: building a
pydantic model per line would cost several times the parse on uploads of hundreds of MB.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

Purpose = Literal["fine-tune", "batch"]
FileFormat = Literal["chat", "prompt_completion", "batch"]

MAX_ERRORS = 20
BATCH_MAX_LINES = 50_000  # OpenAI's limit on requests in one batch input file
MAX_CUSTOM_ID = 512

ROLES = ("system", "developer", "user", "assistant", "tool")
BATCH_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")

_ROLE_SET = frozenset(ROLES)
_ROLE_NAMES = ", ".join(ROLES)
_URL_SET = frozenset(BATCH_URLS)
_URL_NAMES = ", ".join(BATCH_URLS)
_CHAT_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
_PROMPT_KEYS = frozenset({"prompt", "completion"})
_BATCH_KEYS = frozenset({"custom_id", "method", "url", "body"})
_BOM = b"\xef\xbb\xbf"
_FORMAT_NAMES = {"chat": "chat", "prompt_completion": "prompt/completion"}


class LineError(BaseModel):
    """One problem, on one line: what the client needs to find and fix it."""

    model_config = ConfigDict(frozen=True)

    line: int
    message: str


class FileCheck(BaseModel):
    """The verdict on a whole file; ``errors`` is capped, ``error_count`` is not."""

    model_config = ConfigDict(frozen=True)

    purpose: Purpose
    format: FileFormat | None
    lines: int
    errors: list[LineError]
    error_count: int
    endpoint: str | None

    @property
    def ok(self) -> bool:
        return self.error_count == 0


class JsonlValidator:
    """Feed an upload's bytes in any chunking, then ``finish()`` for the verdict."""

    def __init__(
        self,
        purpose: Purpose,
        *,
        max_line_bytes: int = 8 * 2**20,
        max_lines: int | None = None,
    ) -> None:
        if purpose not in ("fine-tune", "batch"):
            raise ValueError(f"unknown purpose {purpose!r}")
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.purpose: Purpose = purpose
        self.max_line_bytes = max_line_bytes
        if max_lines is None and purpose == "batch":
            max_lines = BATCH_MAX_LINES
        self.max_lines = max_lines
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line: discard up to the next newline
        self._line_no = 0  # lines completed so far, blank ones included
        self._lines = 0  # non-blank lines
        self._over_limit = False
        self._errors: list[LineError] = []
        self._error_count = 0
        self._format: FileFormat | None = None
        self._format_line = 0
        self._endpoint: str | None = None
        self._ids: dict[str, int] = {}
        self._finished = False

    def feed(self, chunk: bytes) -> None:
        """Validate every line that ``chunk`` completes; keep the rest for the next call."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        pieces = chunk.split(b"\n")
        tail = pieces.pop()  # the bytes after the last newline: an unfinished line
        if pieces:
            start = 0
            if self._skipping:
                self._skipping = False
                self._line(b"", too_long=True)
                start = 1
            elif self._buf:
                self._buf += pieces[0]
                pieces[0] = bytes(self._buf)
                self._buf.clear()
            for raw in pieces[start:] if start else pieces:
                self._line(raw)
        if tail and not self._skipping:
            # +1: a line of exactly max_line_bytes may still be waiting for its "\r\n".
            if len(self._buf) + len(tail) > self.max_line_bytes + 1:
                self._skipping = True
                self._buf.clear()
            else:
                self._buf += tail

    def finish(self) -> FileCheck:
        """Validate the last line (a final newline is optional) and return the verdict."""
        if not self._finished:
            self._finished = True
            if self._skipping:
                self._skipping = False
                self._line(b"", too_long=True)
            elif self._buf:
                self._line(bytes(self._buf))
                self._buf.clear()
            if self._lines == 0:
                self._error(1, "the file is empty")
        return FileCheck(
            purpose=self.purpose,
            format=self._format,
            lines=self._lines,
            errors=list(self._errors),
            error_count=self._error_count,
            endpoint=self._endpoint,
        )

    def _error(self, line: int, message: str) -> None:
        self._error_count += 1
        if len(self._errors) < MAX_ERRORS:
            self._errors.append(LineError(line=line, message=message))

    def _line(self, raw: bytes, *, too_long: bool = False) -> None:
        self._line_no += 1
        if not too_long and (not raw or raw.isspace()):
            return
        self._lines += 1
        line = self._line_no
        if self.max_lines is not None and self._lines > self.max_lines:
            # One error is enough; the rest of the file is counted but not checked.
            if not self._over_limit:
                self._over_limit = True
                self._error(line, f"more than {self.max_lines:,} lines (the limit)")
            return
        size = len(raw) - 1 if raw.endswith(b"\r") else len(raw)
        if too_long or size > self.max_line_bytes:
            self._error(line, f"line is longer than {self.max_line_bytes:,} bytes")
            return
        if line == 1 and raw.startswith(_BOM):
            raw = raw[3:]  # editors on Windows write one; orjson refuses it
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._error(line, _json_problem(raw, exc))
            return
        if obj.__class__ is not dict:
            self._error(line, f"line is not a JSON object (got {_kind(obj)})")
            return
        if self.purpose == "batch":
            problem = self._check_batch(obj, line)
        else:
            problem = self._check_fine_tune(obj, line)
        if problem is not None:
            self._error(line, problem)

    def _check_fine_tune(self, obj: dict[str, Any], line: int) -> str | None:
        fmt: FileFormat
        if "messages" in obj:
            fmt = "chat"
        elif "prompt" in obj or "completion" in obj:
            fmt = "prompt_completion"
        else:
            return 'expected "messages" (chat format) or "prompt" and "completion"'
        if self._format is not None and fmt != self._format:
            return (
                f"a {_FORMAT_NAMES[fmt]} example, but line {self._format_line} "
                f"set the file's format to {_FORMAT_NAMES[self._format]}"
            )
        problem = _check_chat(obj) if fmt == "chat" else _check_prompt_completion(obj)
        if problem is None and self._format is None:
            self._format, self._format_line = fmt, line
        return problem

    def _check_batch(self, obj: dict[str, Any], line: int) -> str | None:
        for key in obj:
            if key not in _BATCH_KEYS:
                return f"unknown key {key!r}"
        custom_id = obj.get("custom_id")
        if custom_id.__class__ is not str or not custom_id:
            return "custom_id: must be a non-empty string"
        if len(custom_id) > MAX_CUSTOM_ID:
            return f"custom_id: longer than {MAX_CUSTOM_ID} characters"
        first = self._ids.setdefault(custom_id, line)
        if first != line:
            return f"custom_id: {_short(custom_id)} already used on line {first}"
        method = obj.get("method")
        if method != "POST":
            return "method: missing" if method is None else f"method: {_short(method)} is not POST"
        url = obj.get("url")
        if url.__class__ is not str or url not in _URL_SET:
            if url is None:
                return "url: missing"
            return f"url: {_short(url)} is not one of {_URL_NAMES}"
        body = obj.get("body")
        if body.__class__ is not dict:
            return "body: must be an object"
        model = body.get("model")
        if model.__class__ is not str or not model:
            return "body.model: must be a non-empty string"
        if self._endpoint is None:
            self._endpoint, self._format = url, "batch"
            self._format_line = line
        elif url != self._endpoint:
            return (
                f"url: {url!r} differs from {self._endpoint!r} used from line {self._format_line}"
            )
        return None


def validate_jsonl(purpose: Purpose, data: bytes) -> FileCheck:
    """Validate a file already in memory (tests, small uploads)."""
    validator = JsonlValidator(purpose)
    validator.feed(data)
    return validator.finish()


def _check_prompt_completion(obj: dict[str, Any]) -> str | None:
    for key in obj:
        if key not in _PROMPT_KEYS:
            return f"unknown key {key!r}"
    for key in ("prompt", "completion"):
        if key not in obj:
            return f"{key}: missing"
        if obj[key].__class__ is not str:
            return f"{key}: must be a string"
    return None


def _check_chat(obj: dict[str, Any]) -> str | None:
    for key in obj:
        if key not in _CHAT_KEYS:
            return f"unknown key {key!r}"
    messages = obj["messages"]
    if messages.__class__ is not list or not messages:
        return "messages: must be a non-empty list"
    trained = False
    call_ids: set[str] = set()
    for i, msg in enumerate(messages):
        if msg.__class__ is not dict:
            return f"messages[{i}]: must be an object"
        role = msg.get("role")
        if role.__class__ is not str or role not in _ROLE_SET:
            if role is None:
                return f"messages[{i}].role: missing"
            return f"messages[{i}].role: {_short(role)} is not one of {_ROLE_NAMES}"
        calls = msg.get("tool_calls")
        function_call = msg.get("function_call")
        if role == "assistant":
            if "weight" in msg:
                weight = msg["weight"]
                if weight.__class__ is not int or (weight != 0 and weight != 1):
                    return f"messages[{i}].weight: must be 0 or 1"
                trained = trained or weight == 1
            else:
                trained = True
            if calls is not None:
                problem = _check_tool_calls(calls, f"messages[{i}].tool_calls", call_ids)
                if problem is not None:
                    return problem
            if function_call is not None:
                problem = _check_call(function_call, f"messages[{i}].function_call")
                if problem is not None:
                    return problem
        else:
            for key in ("weight", "tool_calls", "function_call"):
                if key in msg:
                    return f"messages[{i}].{key}: only assistant messages have one"
            if role == "tool":
                call_id = msg.get("tool_call_id")
                if call_id.__class__ is not str or not call_id:
                    return f"messages[{i}].tool_call_id: must be a non-empty string"
                if call_id not in call_ids:
                    return (
                        f"messages[{i}].tool_call_id: {_short(call_id)} answers no tool call "
                        "of an earlier assistant message"
                    )
        content = msg.get("content")
        if content.__class__ is str:
            continue
        if content is None:
            if role == "assistant" and (calls or function_call):
                continue
            what = "missing" if "content" not in msg else "must not be null"
            hint = " (unless it has tool_calls)" if role == "assistant" else ""
            return f"messages[{i}].content: {what}{hint}"
        if content.__class__ is not list or not content:
            return f"messages[{i}].content: must be a string or a non-empty list of parts"
        problem = _check_parts(content, f"messages[{i}].content", role)
        if problem is not None:
            return problem
    if not trained:
        return "nothing to train on: no assistant message with weight 1"
    if "tools" in obj:
        problem = _check_tools(obj["tools"])
        if problem is not None:
            return problem
    if "functions" in obj:
        problem = _check_functions(obj["functions"])
        if problem is not None:
            return problem
    if "parallel_tool_calls" in obj and obj["parallel_tool_calls"].__class__ is not bool:
        return "parallel_tool_calls: must be true or false"
    return None


def _check_parts(parts: list[Any], path: str, role: str) -> str | None:
    for j, part in enumerate(parts):
        if part.__class__ is not dict:
            return f"{path}[{j}]: must be an object"
        kind = part.get("type")
        if kind == "text":
            if part.get("text").__class__ is not str:
                return f"{path}[{j}].text: must be a string"
        elif kind == "image_url":
            if role == "assistant":
                return f"{path}[{j}]: an assistant message cannot contain images"
            image = part.get("image_url")
            if image.__class__ is not dict or image.get("url").__class__ is not str:
                return f"{path}[{j}].image_url.url: must be a string"
        elif kind is None:
            return f"{path}[{j}].type: missing"
        else:
            return f"{path}[{j}].type: {_short(kind)} is not one of text, image_url"
    return None


def _check_tool_calls(calls: Any, path: str, call_ids: set[str]) -> str | None:
    if calls.__class__ is not list or not calls:
        return f"{path}: must be a non-empty list"
    for j, call in enumerate(calls):
        if call.__class__ is not dict:
            return f"{path}[{j}]: must be an object"
        call_id = call.get("id")
        if call_id.__class__ is not str or not call_id:
            return f"{path}[{j}].id: must be a non-empty string"
        if call.get("type") != "function":
            return f'{path}[{j}].type: must be "function"'
        problem = _check_call(call.get("function"), f"{path}[{j}].function")
        if problem is not None:
            return problem
        call_ids.add(call_id)
    return None


def _check_call(call: Any, path: str) -> str | None:
    """A function call as the model would emit it: a name, and arguments as a JSON string."""
    if call.__class__ is not dict:
        return f"{path}: must be an object"
    name = call.get("name")
    if name.__class__ is not str or not name:
        return f"{path}.name: must be a non-empty string"
    if call.get("arguments").__class__ is not str:
        return f"{path}.arguments: must be a string (JSON-encoded)"
    return None


def _check_tools(tools: Any) -> str | None:
    if tools.__class__ is not list:
        return "tools: must be a list"
    for j, tool in enumerate(tools):
        if tool.__class__ is not dict:
            return f"tools[{j}]: must be an object"
        if tool.get("type") != "function":
            return f'tools[{j}].type: must be "function"'
        problem = _check_definition(tool.get("function"), f"tools[{j}].function")
        if problem is not None:
            return problem
    return None


def _check_functions(functions: Any) -> str | None:
    if functions.__class__ is not list:
        return "functions: must be a list"
    for j, function in enumerate(functions):
        problem = _check_definition(function, f"functions[{j}]")
        if problem is not None:
            return problem
    return None


def _check_definition(function: Any, path: str) -> str | None:
    if function.__class__ is not dict:
        return f"{path}: must be an object"
    name = function.get("name")
    if name.__class__ is not str or not name:
        return f"{path}.name: must be a non-empty string"
    if "parameters" in function and function["parameters"].__class__ is not dict:
        return f"{path}.parameters: must be an object (a JSON Schema)"
    return None


def _json_problem(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """orjson reports bad UTF-8 as "surrogates not allowed"; say what is really wrong."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8 (byte {bad.start + 1})"
    return f"invalid JSON: {exc.msg} (column {exc.colno})"


def _kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if value.__class__ is bool:
        return "boolean"
    if value.__class__ in (int, float):
        return "number"
    if value.__class__ is str:
        return "string"
    return "array" if value.__class__ is list else "object"


def _short(value: Any) -> str:
    """A client's value quoted for a message, cut short: a bad value may be megabytes long."""
    text = repr(value) if value.__class__ is str else orjson.dumps(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."
