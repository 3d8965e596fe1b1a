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


class StreamText:
    """The assistant's text of a Chat Completions stream (its first choice), gathered
    from the SSE events as they are relayed: for what needs the whole answer after the
    stream (its JSON checked, an exchange kept for learning)."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def feed(self, item: bytes) -> None:
        for line in item.split(b"\n"):
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            try:
                delta = orjson.loads(line[6:])["choices"][0]["delta"]
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                continue
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                self._parts.append(content)

    @property
    def text(self) -> str:
        return "".join(self._parts)
