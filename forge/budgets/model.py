"""What a budget is, what a request may cost against it, and the refusal."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from forge.errors import RateLimited
from forge.spend import Period, SpendScope
from forge.tenancy.plans import PLANS

Unit = Literal["usd", "requests", "tokens"]
UNITS: tuple[Unit, ...] = ("usd", "requests", "tokens")


# A budget is a setting of its subject: its changes are audited as the subject's update.
BUDGET_AUDIT_EVENT: dict[SpendScope, str] = {
    "organization": "organization.updated",
    "project": "project.updated",
    "key": "api_key.updated",
}


class Budget(BaseModel):
    id: str
    org_id: str
    scope: SpendScope
    subject_id: str
    period: Period
    unit: Unit = "usd"
    limit: float = Field(ge=0)

    def describe(self) -> str:
        amount = f"${self.limit:,.2f}" if self.unit == "usd" else f"{self.limit:,.0f} {self.unit}"
        where = "plan" if self.id.startswith("plan-") else f"{self.scope} {self.subject_id}"
        return (
            f"the {'daily' if self.period == 'day' else 'monthly'} budget of {amount} for {where}"
        )


def plan_budget(org_id: str, plan: str | None) -> Budget | None:
    """The plan's monthly request quota as a budget (Community: 100 requests a month)."""
    tier = PLANS.get(plan) if plan else None  # type: ignore[call-overload]
    if tier is None or tier.requests_per_month is None:
        return None
    return Budget(
        id=f"plan-{org_id}",
        org_id=org_id,
        scope="organization",
        subject_id=org_id,
        period="month",
        unit="requests",
        limit=tier.requests_per_month,
    )


class Costs(BaseModel):
    """A request's cost in each unit: its worst case before it runs, its real one after."""

    usd: float = 0.0
    requests: float = 1.0
    tokens: float = 0.0

    def of(self, unit: Unit) -> float:
        value: float = getattr(self, unit)
        return value


DEFAULT_MAX_OUTPUT_TOKENS = 4096


def worst_case(
    body_bytes: int,
    max_output: int | None,
    input_price_per_mtok: float,
    output_price_per_mtok: float,
    context_window: int | None = None,
) -> Costs:
    """The most a request can cost: no more prompt tokens than its body has bytes (a
    byte-level tokenizer's token covers at least one byte), and its ``max_tokens`` (else
    the model's context window, else ``DEFAULT_MAX_OUTPUT_TOKENS``) of output."""
    output = max_output or context_window or DEFAULT_MAX_OUTPUT_TOKENS
    usd = (body_bytes * input_price_per_mtok + output * output_price_per_mtok) / 1_000_000
    return Costs(usd=usd, requests=1, tokens=body_bytes + output)


class QuotaExceeded(RateLimited):
    """A budget is spent: OpenAI's ``insufficient_quota``, which clients must not retry
    (``x-should-retry: false``) until the budget's period turns or it is raised."""

    error_type = "insufficient_quota"
    default_code = "insufficient_quota"

    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}


def refusal(budget: Budget, spent: float) -> QuotaExceeded:
    left = max(0.0, budget.limit - spent)
    shown = f"${left:,.4f}" if budget.unit == "usd" else f"{math.floor(left):,} {budget.unit}"
    return QuotaExceeded(
        f"You exceeded your current quota: {budget.describe()} has {shown} left, less "
        f"than this request may cost. It renews with the next {budget.period}, or an "
        "admin can raise it.",
    )
