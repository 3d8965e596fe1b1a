"""Pieces every translator shares: data URLs, tool-call arguments, unsupported fields."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from forge.errors import InvalidRequest


def unsupported(provider: str, param: str, why: str = "") -> InvalidRequest:
    """A 400 raised before any upstream call, naming the field the provider cannot serve."""
    suffix = f": {why}" if why else "."
    return InvalidRequest(
        f"'{param}' is not supported by provider type {provider}{suffix}",
        param=param,
        code="unsupported_parameter",
    )


def function_of(tool: Any, param: str, provider: str) -> dict[str, Any]:
    """The ``function`` of an OpenAI tool, checked: only function tools, each named."""
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise unsupported(provider, f"{param}.type", f"tool type {kind!r}")
    fn = tool.get("function") or {}
    if not fn.get("name"):
        raise InvalidRequest("A function tool needs a name.", param=f"{param}.function.name")
    return fn


def parse_data_url(url: str, param: str) -> tuple[str, str] | None:
    """(media_type, base64 data) for a ``data:`` URL; None for other URLs."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or ";base64" not in header:
        raise InvalidRequest("Image data URLs must be base64 encoded.", param=param)
    media_type = header.split(";", 1)[0] or "application/octet-stream"
    try:
        base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
    except binascii.Error:
        raise InvalidRequest("Image data URL is not valid base64.", param=param) from None
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
    """The text of an OpenAI message content (string, or text parts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        part.get("text", "")
        for part in content
        if isinstance(part, dict) and part.get("type") == "text"
    )


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
