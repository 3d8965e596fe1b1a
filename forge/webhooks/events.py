"""The events an endpoint may subscribe to, declared once, and the shape every event
takes (Standard Webhooks' ``type``, ``timestamp``, ``data``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel

EventType = Literal[
    "spend_alert.fired",  # an organisation's or project's month's spend crossed an alert
    "budget.threshold_reached",  # a budget's period reached 80% or 100% of its limit
    "api_key.created",
    "api_key.deleted",
    "breaker.opened",  # the platform's: a model's breaker opened (no traffic until probed)
    "breaker.closed",
    "fine_tuning.job.succeeded",  # OpenAI's names for a job's end
    "fine_tuning.job.failed",
    "fine_tuning.job.cancelled",
    "batch.completed",  # OpenAI's names for a batch's end
    "batch.failed",
    "batch.expired",
    "batch.cancelled",
    "webhook.test",  # sent by POST /v1/organization/webhooks/{id}/test
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
# Events about the platform itself, not one organisation's: its operator's to hear.
PLATFORM_EVENTS = frozenset({"breaker.opened", "breaker.closed"})


class Event(BaseModel):
    type: str
    timestamp: datetime
    data: dict[str, Any]
