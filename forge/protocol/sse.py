"""Server-Sent Events framing shared by providers and the gateway."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event carrying a JSON object."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """An in-stream error in the shape OpenAI's SDKs raise on (``{"error": {...}}``)."""
    return event(body)
