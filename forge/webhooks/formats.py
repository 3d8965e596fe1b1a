"""What each kind of endpoint is sent for an event: the event itself (Standard
Webhooks), or a message in the format each chat tool renders from an incoming webhook:
Slack (``text`` and Block Kit ``blocks``), Discord (``content`` and an ``embeds`` card),
Microsoft Teams (a Workflows message carrying an Adaptive Card)."""

from __future__ import annotations

from typing import Any, Literal

from forge.webhooks.events import Event

Kind = Literal["standard", "slack", "discord", "teams"]
KINDS: tuple[Kind, ...] = ("standard", "slack", "discord", "teams")

WARNINGS = frozenset({"breaker.opened", "spend_alert.fired", "budget.threshold_reached"})
WARNING, GOOD = 0xD93F0B, 0x2DA44E  # Discord embed colours (RGB as an integer)
TITLES = {
    "spend_alert.fired": "Spend alert",
    "budget.threshold_reached": "Budget threshold reached",
    "api_key.created": "API key created",
    "api_key.deleted": "API key deleted",
    "breaker.opened": "Model cut off after failures",
    "breaker.closed": "Model back in service",
    "webhook.test": "Test message from PromptForge",
}


def summary(event: Event) -> str:
    """One line a person reads in a chat channel."""
    d = event.data
    if event.type == "spend_alert.fired":
        return (
            f"{d.get('scope', 'organization')} {d.get('subject_id')} spent "
            f"${d.get('spent_usd', 0):,.2f} this month, past its alert at "
            f"${d.get('threshold_cents', 0) / 100:,.2f}."
        )
    if event.type == "budget.threshold_reached":
        used, limit = d.get("used", 0), d.get("limit", 0)
        money = d.get("unit") == "usd"
        amount = (
            f"${used:,.2f} of ${limit:,.2f}"
            if money
            else f"{used:,.0f} of {limit:,.0f} {d.get('unit')}"
        )
        return (
            f"{d.get('scope')} {d.get('subject_id')} used {amount} this {d.get('period')}: "
            f"{d.get('percent')}% of its budget."
        )
    if event.type.startswith("api_key."):
        return f"Key {d.get('id', '?')} {event.type.split('.', 1)[1]} by {d.get('actor', '?')}."
    if event.type == "breaker.opened":
        return f"{d.get('target')} gets no traffic until {d.get('until')}: {d.get('reason')}."
    if event.type == "breaker.closed":
        return f"{d.get('target')} answers again."
    return "This endpoint receives PromptForge's events."


def _facts(event: Event) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in event.data.items() if isinstance(v, str | int | float)]


def render(kind: Kind, event: Event) -> dict[str, Any]:
    title = TITLES.get(event.type, event.type)
    text = summary(event)
    if kind == "standard":
        return event.model_dump(mode="json")
    if kind == "slack":
        fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in _facts(event)[:10]]
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
        ]
        if fields:
            blocks.append({"type": "section", "fields": fields})
        return {"text": f"{title}: {text}", "blocks": blocks}
    if kind == "discord":
        embed = {
            "title": title[:256],
            "description": text[:4096],
            "timestamp": event.timestamp.isoformat(),
            "color": WARNING if event.type in WARNINGS else GOOD,
            "fields": [
                {"name": k[:256], "value": v[:1024], "inline": True} for k, v in _facts(event)[:25]
            ],
        }
        return {"content": f"**{title}**"[:2000], "embeds": [embed]}
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium"},
            {"type": "TextBlock", "text": text, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(event)]},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }
