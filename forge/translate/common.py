"""Pieces every translator shares: data URLs, tool calls, unsupported fields, and the
checks that keep a body the gateway did not validate (or a field OpenAI's schema leaves
open) from crashing a translator: a wrong shape is a 400 naming the field."""

from __future__ import annotations

from typing import Any

import orjson

from forge.errors import InvalidRequest
from forge.protocol.base64data import looks_base64


def unsupported(provider: str, param: str, why: str = "") -> InvalidRequest:
    """A 400 raised before any upstream call, naming the field the provider cannot serve."""
    suffix = f": {why}" if why else "."
    return InvalidRequest(
        f"'{param}' is not supported by provider type {provider}{suffix}",
        param=param,
        code="unsupported_parameter",
    )


def obj(value: Any, param: str) -> dict[str, Any]:
    """``value`` if it is a JSON object (None: an empty one), else a 400 naming ``param``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param, code="invalid_value")
    return value


def array(value: Any, param: str) -> list[Any]:
    """``value`` if it is a JSON array (None: an empty one), else a 400 naming ``param``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"'{param}' must be an array.", param=param, code="invalid_value")
    return value


def parts_of(content: Any, param: str) -> list[dict[str, Any]]:
    """The parts of a message's array content, each an object (None: no parts)."""
    if content is not None and not isinstance(content, list):
        raise InvalidRequest(
            f"'{param}' must be a string or an array of content parts.",
            param=param,
            code="invalid_value",
        )
    return [obj(part, f"{param}[{i}]") for i, part in enumerate(content or ())]


def _name(value: Any, param: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} needs a name.", param=param)
    return value


def function_of(tool: Any, param: str, provider: str) -> dict[str, Any]:
    """The ``function`` of an OpenAI tool, checked: only function tools, each named, its
    ``parameters`` (if any) a JSON Schema object."""
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise unsupported(provider, f"{param}.type", f"tool type {kind!r}")
    fn = obj(tool.get("function"), f"{param}.function")
    _name(fn.get("name"), f"{param}.function.name", "A function tool")
    obj(fn.get("parameters"), f"{param}.function.parameters")
    return fn


def called_function(call: dict[str, Any], param: str, provider: str) -> tuple[str, dict[str, Any]]:
    """(name, arguments object) of an assistant's tool call, checked: only function calls
    (a custom tool's free-form input has no counterpart elsewhere), each named."""
    kind = call.get("type", "function")
    if kind != "function":
        raise unsupported(provider, f"{param}.type", f"tool call type {kind!r}")
    fn = obj(call.get("function"), f"{param}.function")
    name = _name(fn.get("name"), f"{param}.function.name", "A tool call's function")
    return name, tool_arguments(fn.get("arguments"), f"{param}.function.arguments")


def parse_data_url(url: str, param: str) -> tuple[str, str] | None:
    """(media_type, base64 data) for a ``data:`` URL; None for other URLs."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or ";base64" not in header:
        raise InvalidRequest("Image data URLs must be base64 encoded.", param=param)
    media_type = header.split(";", 1)[0] or "application/octet-stream"
    if not looks_base64(data):
        raise InvalidRequest("Image data URL is not valid base64.", param=param)
    return media_type, data


def tool_arguments(raw: Any, param: str) -> dict[str, Any]:
    """An OpenAI tool call's ``arguments`` (a JSON string) as an object."""
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("Tool call arguments must be a JSON object.", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest("Tool call arguments must be a JSON object.", param=param)
    return value


def text_of(content: Any) -> str:
    """The text of an OpenAI message content (string, or text parts joined); anything
    else has none."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        part["text"]
        for part in content
        if isinstance(part, dict)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    )


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
