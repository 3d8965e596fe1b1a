"""Usage events: what one request cost, as the gateway observed it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

UsageStatus = Literal["ok", "error", "client_disconnected"]


class UsageEvent(BaseModel):
    request_id: str
    created_at: datetime
    key_id: str | None
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


def cost_usd(
    prompt_tokens: int, completion_tokens: int, input_price: float, output_price: float
) -> float:
    """Dollars for a request at per-million-token prices."""
    return (prompt_tokens * input_price + completion_tokens * output_price) / 1_000_000
