"""Usage events: what one request cost, as the gateway observed it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

# interrupted: the replica serving it died mid-call; written by its successor from the
# spool, with the tokens known at the last progress mark (usage_estimated).
UsageStatus = Literal["ok", "error", "client_disconnected", "interrupted"]


class UsageEvent(BaseModel):
    request_id: str
    client_request_id: str | None = None
    created_at: datetime
    key_id: str | None
    org_id: str | None = None  # None: recorded before organisations existed
    project_id: str | None = None
    endpoint: str
    model: str
    provider: str
    provider_model: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool = False
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None = None
    status: UsageStatus
    http_status: int
    error_code: str | None = None
    route: str | None = None  # how it was routed: the x-forge-route header's text
    arm: str | None = None  # "<experiment>/<arm>" for a request in an A/B experiment
    validation: str | None = None  # forge.quality.validation's check of the answer


def cost_usd(
    prompt_tokens: int, completion_tokens: int, input_price: float, output_price: float
) -> float:
    """Dollars for a request at per-million-token prices."""
    return (prompt_tokens * input_price + completion_tokens * output_price) / 1_000_000
