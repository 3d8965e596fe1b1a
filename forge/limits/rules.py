"""Which limits a request is under: the rules set on its key, project and organisation
(and the organisation's plan), resolved to the buckets that admit it.

Levels, each checked (a request must pass them all):
- its key's rules: for the model asked for, and ``*`` (all the key's models together);
- its project's: per model (OpenAI's project rate limits), and ``*``;
- its organisation's: per model, each field defaulting to its plan's, and ``*``.
The platform operator's keys are under none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from forge.tenancy.plans import PLANS

Scope = Literal["organization", "project", "key"]
Kind = Literal["rpm", "tpm", "rpd", "concurrent"]
ANY_MODEL = "*"
MINUTE_S, DAY_S = 60.0, 86_400.0

# A rule's field per bucket kind, and the period the field counts over (none for the
# requests in flight at once: permits, held for a request's whole life, not tokens).
FIELDS: dict[Kind, tuple[str, float]] = {
    "rpm": ("max_requests_per_1_minute", MINUTE_S),
    "tpm": ("max_tokens_per_1_minute", MINUTE_S),
    "rpd": ("max_requests_per_1_day", DAY_S),
    "concurrent": ("max_concurrent_requests", 0.0),
}
LIMIT_FIELDS = tuple(field for field, _ in FIELDS.values())


class LimitRule(BaseModel):
    """One stored rule (``forge.db.schema.RateLimitRule``); None: no limit here."""

    scope: Scope
    subject_id: str
    model: str = ANY_MODEL
    max_requests_per_1_minute: int | None = None
    max_tokens_per_1_minute: int | None = None
    max_requests_per_1_day: int | None = None
    max_concurrent_requests: int | None = None

    def value(self, kind: Kind) -> int | None:
        value: int | None = getattr(self, FIELDS[kind][0])
        return value


@dataclass(frozen=True, slots=True)
class BucketLimit:
    """One bucket a request draws from: ``limit`` per ``period_s`` of ``kind``."""

    name: str
    kind: Kind
    limit: int
    period_s: float


def _buckets(rule: LimitRule, model: str) -> list[BucketLimit]:
    return [
        BucketLimit(f"{rule.scope}:{rule.subject_id}:{model}:{kind}", kind, value, period)
        for kind, (_, period) in FIELDS.items()
        if (value := rule.value(kind)) is not None
    ]


def org_model_rule(rules: list[LimitRule], plan: str, org_id: str, model: str) -> LimitRule:
    """The organisation's limits on ``model``: what is set, the plan's where nothing is."""
    tier = PLANS.get(plan)  # type: ignore[call-overload]
    set_ = next(
        (r for r in rules if r.scope == "organization" and r.model == model),
        LimitRule(scope="organization", subject_id=org_id, model=model),
    )
    if tier is None:
        return set_
    return set_.model_copy(
        update={
            "max_requests_per_1_minute": set_.max_requests_per_1_minute or tier.requests_per_minute,
            "max_tokens_per_1_minute": set_.max_tokens_per_1_minute or tier.tokens_per_minute,
        }
    )


def bucket_limits(
    rules: list[LimitRule], plan: str | None, org_id: str, model: str
) -> tuple[BucketLimit, ...]:
    """Every bucket a request for ``model`` must pass; ``plan`` None: no plan defaults
    (the operator's keys, which are under no limits at all, never get here)."""
    out: list[BucketLimit] = []
    for rule in rules:
        if rule.model == ANY_MODEL:
            out += _buckets(rule, ANY_MODEL)
        elif rule.model == model and rule.scope != "organization":
            out += _buckets(rule, model)
    if plan is not None:
        out += _buckets(org_model_rule(rules, plan, org_id, model), model)
    else:
        out += [
            b
            for r in rules
            if r.scope == "organization" and r.model == model
            for b in _buckets(r, model)
        ]
    return tuple(out)
