"""A self-hosted model's streamed text split into content and OpenAI tool calls.

Each model family writes tool calls its own way (vLLM keeps a parser per family; these
follow the same families):

- ``hermes`` (Hermes, Qwen 2.5/3): ``<tool_call>{"name", "arguments"}</tool_call>``,
  any number of them, after some text or none.
- ``llama3_json`` (Llama 3.1-3.3): the whole answer is ``{"name", "parameters"}``
  (several joined by ``;``), optionally after ``<|python_tag|>``.
- ``mistral``: ``[TOOL_CALLS]`` and a JSON array of ``{"name", "arguments"}``, or (v11
  tokenizers: Mistral Small 3.2, Magistral) ``[TOOL_CALLS]name[ARGS]{...}`` per call. The
  markers are special tokens: the model server keeps them in the text for ``auto``
  (``SamplingParams.keep_special``), and an answer that *starts* with the array counts
  even without its marker.

Text that could still become a marker is held back (like a stop string) so no part of
one reaches the client; a call that does not parse is passed on as text, as vLLM does.
For ``tool_choice`` ``required`` and named functions the output is constrained
(``serve.structured.tools``) and read by ``RequiredCalls`` and ``NamedCall``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from serve.models.engine import stop_prefix_len
from serve.structured.tools import ToolPlan

ToolParserName = Literal["hermes", "llama3_json", "mistral"]


@dataclass(slots=True)
class CallDelta:
    """A piece of one tool call: the first names it (``id`` and ``name``), the rest, if
    any, add to its ``arguments``."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None

    def openai(self) -> dict[str, Any]:
        """As a ``delta.tool_calls`` entry of a chat completion chunk."""
        function: dict[str, Any] = {"arguments": self.arguments}
        if self.name is not None:
            function["name"] = self.name
            return {"index": self.index, "id": self.id, "type": "function", "function": function}
        return {"index": self.index, "function": function}


Piece = str | CallDelta  # content text, or part of a tool call


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class ToolStream(Protocol):
    calls: int  # tool calls begun so far

    def feed(self, text: str) -> list[Piece]: ...

    def finish(self) -> list[Piece]: ...


@dataclass(frozen=True, slots=True)
class Family:
    start: str  # the marker a call (or the calls) begins with
    end: str | None  # the marker a call ends with; None: the calls run to the end
    bare: str | None  # a first character that starts the calls without the marker
    arguments_key: str  # "arguments" or "parameters"
    listed: bool  # the calls are one JSON array, not one object per marker
    separator: str | None = None  # between objects in one body (Llama 3's ";")
    args_marker: str | None = None  # Mistral v11's "name[ARGS]{...}" form

    @property
    def markers(self) -> tuple[str, ...]:
        """The marker strings, kept in the text where they are special tokens."""
        return tuple(m for m in (self.start, self.end, self.args_marker) if m)


FAMILIES: dict[ToolParserName, Family] = {
    "hermes": Family("<tool_call>", "</tool_call>", None, "arguments", listed=False),
    "llama3_json": Family("<|python_tag|>", None, "{", "parameters", False, separator=";"),
    "mistral": Family("[TOOL_CALLS]", None, "[", "arguments", True, args_marker="[ARGS]"),
}


def detect_family(chat_template: str | None) -> ToolParserName | None:
    """The tool-call family a chat template writes, from its markers."""
    template = chat_template or ""
    if "<tool_call>" in template:
        return "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|python_tag|>" in template or "ipython" in template:
        return "llama3_json"
    return None


class TaggedCalls:
    """``auto``: content streams as it comes; calls are emitted whole once complete."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.calls = 0
        self._buffer = ""
        self._in_call = False
        self._opened = ""  # the marker the open call began with ("": the bare form)
        self._started = False  # any non-blank text seen (the bare form only at the start)

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        out: list[Piece] = []
        while True:
            if self._in_call:
                if self.family.end is None:
                    return out
                end = self._buffer.find(self.family.end)
                if end == -1:
                    return out
                body, self._buffer = self._buffer[:end], self._buffer[end + len(self.family.end) :]
                out += self._calls(body, self.family.start + body + self.family.end)
                self._in_call = False
                continue
            if not self._started:
                stripped = self._buffer.lstrip()
                start = self.family.start
                if not stripped or (len(stripped) < len(start) and start.startswith(stripped)):
                    return out  # blank, or maybe the marker: wait for more
                self._started = True
                bare = self.family.bare
                if bare and stripped.startswith(bare) and not stripped.startswith(start):
                    self._buffer, self._in_call, self._opened = stripped, True, ""
                    continue
            at = self._buffer.find(self.family.start)
            if at != -1:
                if at:
                    out.append(self._buffer[:at])
                self._buffer = self._buffer[at + len(self.family.start) :]
                self._in_call, self._opened = True, self.family.start
                continue
            held = stop_prefix_len(self._buffer, [self.family.start])
            ready = len(self._buffer) - held
            if ready:
                out.append(self._buffer[:ready])
                self._buffer = self._buffer[ready:]
            return out

    def finish(self) -> list[Piece]:
        rest, self._buffer = self._buffer, ""
        if not self._in_call:
            return [rest] if rest else []
        self._in_call = False
        return self._calls(rest, self._opened + rest)

    def _calls(self, body: str, as_text: str) -> list[Piece]:
        """The calls in one body, or the body back as text when it is not calls."""
        parsed = _parse_calls(body, self.family)
        if parsed is None:
            return [as_text] if as_text else []
        out: list[Piece] = []
        for name, arguments in parsed:
            out.append(CallDelta(self.calls, arguments, new_call_id(), name))
            self.calls += 1
        return out


def _parse_calls(body: str, family: Family) -> list[tuple[str, str]] | None:
    body = body.strip()
    if family.start == "<|python_tag|>" and body.startswith(family.start):
        body = body[len(family.start) :].lstrip()
    if family.args_marker and family.args_marker in body and not body.startswith("["):
        return _parse_named_args(body, family)
    try:
        if family.listed:
            items = orjson.loads(body)
        elif family.separator:
            items = [orjson.loads(part) for part in body.split(family.separator) if part.strip()]
        else:
            items = [orjson.loads(body)]
    except orjson.JSONDecodeError:
        return None
    if not isinstance(items, list) or not items:
        return None
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        arguments = item.get(family.arguments_key, item.get("arguments", {}))
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = orjson.loads(arguments)
            except orjson.JSONDecodeError:
                return None
        calls.append((item["name"], orjson.dumps(arguments).decode()))
    return calls


def _parse_named_args(body: str, family: Family) -> list[tuple[str, str]] | None:
    """``name[ARGS]{...}``, calls joined by the start marker."""
    assert family.args_marker is not None
    calls = []
    for part in body.split(family.start):
        if not part.strip():
            continue
        name, marker, arguments = part.partition(family.args_marker)
        if not marker or not name.strip():
            return None
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return None
        calls.append((name.strip(), orjson.dumps(parsed).decode()))
    return calls or None


class NamedCall:
    """A named ``tool_choice``: the output is the function's arguments, streamed as they
    come."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def feed(self, text: str) -> list[Piece]:
        if not text:
            return []
        if self.calls == 0:
            self.calls = 1
            return [CallDelta(0, text, new_call_id(), self.name)]
        return [CallDelta(0, text)]

    def finish(self) -> list[Piece]:
        if self.calls == 0:  # nothing generated (max_tokens cut it at once)
            self.calls = 1
            return [CallDelta(0, "", new_call_id(), self.name)]
        return []


class RequiredCalls:
    """``required``: the output is a JSON array of ``{"name", "parameters"}``; its calls
    are emitted once it is complete (text, if it was cut short)."""

    FAMILY = Family("", None, None, "parameters", listed=True)

    def __init__(self) -> None:
        self.calls = 0
        self._text: list[str] = []

    def feed(self, text: str) -> list[Piece]:
        self._text.append(text)
        return []

    def finish(self) -> list[Piece]:
        text = "".join(self._text)
        parsed = _parse_calls(text, self.FAMILY)
        if parsed is None:
            return [text] if text else []
        self.calls = len(parsed)
        return [CallDelta(i, args, new_call_id(), name) for i, (name, args) in enumerate(parsed)]


class PlainText:
    """No tools: everything is content."""

    calls = 0

    def feed(self, text: str) -> list[Piece]:
        return [text] if text else []

    def finish(self) -> list[Piece]:
        return []


def tool_stream(plan: ToolPlan | None, family: ToolParserName | None) -> ToolStream:
    """How to read a request's output."""
    if plan is None or plan.mode == "none":
        return PlainText()
    if plan.mode == "named":
        return NamedCall(plan.named or "")
    if plan.mode == "required":
        return RequiredCalls()
    return TaggedCalls(FAMILIES[family]) if family else PlainText()
