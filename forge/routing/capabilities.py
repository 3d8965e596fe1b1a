"""Refusing, before any upstream call, what a model cannot serve."""

from __future__ import annotations

from typing import Any

from forge.config import ModelConfig
from forge.errors import InvalidRequest


def _refuse(model: ModelConfig, param: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"The model '{model.name}' does not support {what}.",
        param=param,
        code="unsupported_parameter",
    )


def check_request(model: ModelConfig, body: dict[str, Any]) -> None:
    """Raise a 400 naming the first field ``model`` cannot serve."""
    caps = model.capabilities
    if not caps.tools:
        for field in ("tools", "tool_choice", "functions"):
            if body.get(field):
                raise _refuse(model, field, "tools")
    if not caps.json_mode and body.get("response_format"):
        kind = (body["response_format"] or {}).get("type")
        if kind not in (None, "text"):
            raise _refuse(model, "response_format", "JSON mode")
    if not caps.vision:
        for i, message in enumerate(body.get("messages") or ()):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") in ("image_url", "input_image"):
                    raise _refuse(model, f"messages[{i}].content[{j}]", "images")
