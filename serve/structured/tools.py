"""A chat request's ``tools`` and ``tool_choice`` for a self-hosted model: checked, the
messages made ready for the model's chat template, and, for ``required`` or a named
function, the constraint that makes the model call one.

``required`` and a named function are enforced by constrained decoding, the way vLLM
does it: a named function's output is its arguments object (its ``parameters`` schema),
``required`` is a JSON array of ``{"name", "parameters"}`` objects, one per call (at most
one without ``parallel_tool_calls``). ``auto`` generates freely and the model family's
parser (``serve.structured.tool_parsers``) finds the calls in the text; ``none`` renders
no tools at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from forge.errors import InvalidRequest
from serve.structured.spec import Constraint, check_schema, compile_schema, invalid

ToolMode = Literal["none", "auto", "required", "named"]
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What the model is given and how its output is read."""

    mode: ToolMode
    tools: list[dict[str, Any]] = field(default_factory=list)  # for the chat template
    named: str | None = None  # the function ``tool_choice`` names
    parallel: bool = True
    constraint: Constraint | None = None  # for ``required`` and ``named``

    @property
    def rendered(self) -> list[dict[str, Any]] | None:
        """The tools the chat template renders (none for ``tool_choice: none``)."""
        return self.tools if self.mode != "none" and self.tools else None


def parse_tools(body: dict[str, Any]) -> ToolPlan | None:
    """The plan for a chat body's ``tools``/``tool_choice`` (None: no tools); a 400 naming
    the field that is malformed."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not tools:
        if choice not in (None, "none"):
            raise invalid("'tool_choice' is only allowed when 'tools' are given.", "tool_choice")
        return None
    if not isinstance(tools, list):
        raise invalid("'tools' must be an array of function tools.", "tools")
    functions = [_function(i, tool) for i, tool in enumerate(tools)]
    names = [f["function"]["name"] for f in functions]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise invalid(f"Two tools are named {duplicate!r}; tool names must be unique.", "tools")
    parallel = body.get("parallel_tool_calls")
    parallel = True if parallel is None else bool(parallel)
    mode, named = _choice(choice, names)
    constraint = None
    if mode == "named":
        index = names.index(named or "")
        schema = functions[index]["function"]["parameters"]
        param = f"tools[{index}].function.parameters"
        constraint = compile_schema("tool_calls", schema, named, param)
    elif mode == "required":
        constraint = compile_schema("tool_calls", calls_schema(functions, parallel), None, "tools")
    return ToolPlan(mode, functions, named, parallel, constraint)


def _function(index: int, tool: Any) -> dict[str, Any]:
    """A tool as the chat template wants it, its parameters checked as JSON Schema."""
    where = f"tools[{index}]"
    if not isinstance(tool, dict):
        raise invalid(f"'{where}' must be an object.", where)
    if tool.get("type") != "function":
        raise InvalidRequest(
            f"Only function tools are supported on this model; '{where}.type' is "
            f"{tool.get('type')!r}.",
            param=f"{where}.type",
            code="unsupported_parameter",
        )
    function = tool.get("function")
    if not isinstance(function, dict):
        raise invalid(f"'{where}.function' must be an object.", f"{where}.function")
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise invalid(
            f"'{where}.function.name' must be 1-64 letters, digits, '_' or '-'.",
            f"{where}.function.name",
        )
    parameters = function.get("parameters")
    if parameters is None:
        parameters = EMPTY_PARAMETERS
    elif not isinstance(parameters, dict):
        raise invalid(
            f"'{where}.function.parameters' must be a JSON Schema object.",
            f"{where}.function.parameters",
        )
    else:
        check_schema(parameters, f"{where}.function.parameters")
    rendered: dict[str, Any] = {"name": name, "parameters": parameters}
    if isinstance(function.get("description"), str):
        rendered["description"] = function["description"]
    return {"type": "function", "function": rendered}


def _choice(choice: Any, names: list[str]) -> tuple[ToolMode, str | None]:
    if choice is None or choice == "auto":
        return "auto", None
    if choice in ("none", "required"):
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise invalid("'tool_choice.function.name' must be a string.", "tool_choice")
        if name not in names:
            raise invalid(
                f"'tool_choice' names the function {name!r}, which is not in 'tools'.",
                "tool_choice",
            )
        return "named", name
    raise invalid(
        "'tool_choice' must be 'none', 'auto', 'required' or "
        "{'type': 'function', 'function': {'name': ...}}.",
        "tool_choice",
    )


def calls_schema(functions: list[dict[str, Any]], parallel: bool) -> dict[str, Any]:
    """The JSON a ``required`` output must be: an array of calls to the given functions
    (vLLM's form, so both engines answer alike)."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [f["function"]["name"]]},
                "parameters": f["function"]["parameters"],
            },
            "required": ["name", "parameters"],
            "additionalProperties": False,
        }
        for f in functions
    ]
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": calls[0] if len(calls) == 1 else {"anyOf": calls},
    }
    if not parallel:
        schema["maxItems"] = 1
    return schema


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages as Hugging Face chat templates read them: text content,
    assistant ``tool_calls`` with their arguments as objects, ``tool`` results with the
    name of the function they answer. Non-text content is a 400 naming the part."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message["role"]
        item: dict[str, Any] = {"role": role, "content": _text(i, message.get("content"))}
        if role == "assistant" and message.get("tool_calls"):
            item["tool_calls"] = []
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                names[str(call.get("id"))] = function.get("name", "")
                item["tool_calls"].append(
                    {
                        "id": call.get("id"),
                        "type": "function",
                        "function": {
                            "name": function.get("name", ""),
                            "arguments": _arguments(function.get("arguments")),
                        },
                    }
                )
        elif role == "tool":
            call_id = str(message.get("tool_call_id"))
            item["tool_call_id"] = call_id
            item["name"] = names.get(call_id, "")
        out.append(item)
    return out


def _text(index: int, content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise InvalidRequest(
                "This model takes text content only.",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_parameter",
            )
        parts.append(part.get("text") or "")
    return "".join(parts)


def _arguments(arguments: Any) -> Any:
    """A call's arguments as an object when they are JSON (templates render objects)."""
    if not isinstance(arguments, str):
        return arguments or {}
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
