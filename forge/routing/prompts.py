"""Per-target system prompts: a model's ``system_prompt`` template, applied to a chat
request on its way to that model (and only that one: a fallback gets its own)."""

from __future__ import annotations

from typing import Any

from forge.config import ModelConfig


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict))
        return "\n".join(t for t in parts if isinstance(t, str))
    return ""


def adapt(model: ModelConfig, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the model's system prompt: the caller's system (and developer)
    messages folded into the template's ``{system}``, as one system message first."""
    template = model.system_prompt
    messages = body.get("messages")
    if template is None or not isinstance(messages, list):
        return body
    own: list[Any] = []
    rest: list[Any] = []
    for m in messages:
        is_system = isinstance(m, dict) and m.get("role") in ("system", "developer")
        (own if is_system else rest).append(m)
    system = "\n\n".join(t for t in (_text(m.get("content")) for m in own) if t)
    first = {"role": "system", "content": template.format(system=system)}
    return {**body, "messages": [first, *rest]}
