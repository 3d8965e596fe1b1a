"""Plans: the product's tiers, as templates of quotas and features.

An organisation's plan sets its default limits and switches features on; a feature
outside the plan is a 403 naming the cheapest plan that has it (``require_feature``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from forge.errors import PermissionDenied

PlanName = Literal["community", "professional", "enterprise", "platform"]
Feature = Literal[
    "all_providers", "teams", "sso", "fine_tuning", "sub_organizations", "usage_export"
]


@dataclass(frozen=True)
class Plan:
    name: PlanName
    title: str
    requests_per_month: int | None  # None: unlimited
    features: frozenset[Feature]
    requests_per_minute: int  # per model, the organisation's unless set otherwise
    tokens_per_minute: int  # per model, likewise


PLANS: dict[PlanName, Plan] = {
    "community": Plan("community", "Community", 100, frozenset(), 60, 100_000),
    "professional": Plan(
        "professional", "Professional", None, frozenset({"all_providers"}), 5_000, 2_000_000
    ),
    "enterprise": Plan(
        "enterprise",
        "Enterprise",
        None,
        frozenset({"all_providers", "teams", "sso", "fine_tuning"}),
        10_000,
        10_000_000,
    ),
    "platform": Plan(
        "platform",
        "Platform",
        None,
        frozenset(
            {"all_providers", "teams", "sso", "fine_tuning", "sub_organizations", "usage_export"}
        ),
        30_000,
        150_000_000,
    ),
}
ORDER: tuple[PlanName, ...] = ("community", "professional", "enterprise", "platform")


def queue_rank(plan: str | None) -> int:
    """Where a plan's requests wait for a provider's capacity: the higher the plan, the
    sooner (0 first); the platform's own keys (no plan) before everyone."""
    if plan is None or plan not in ORDER:
        return 0
    return len(ORDER) - ORDER.index(plan)


def plan_has(plan: str, feature: Feature) -> bool:
    current = PLANS.get(plan)  # type: ignore[call-overload]
    return current is not None and feature in current.features


def require_feature(plan: str, feature: Feature) -> None:
    """403 unless ``plan`` has ``feature``, naming the first plan that does."""
    if plan_has(plan, feature):
        return
    current = PLANS.get(plan)  # type: ignore[call-overload]
    having = next(PLANS[name] for name in ORDER if feature in PLANS[name].features)
    raise PermissionDenied(
        f"{feature.replace('_', ' ').capitalize()} is not in the "
        f"{current.title if current else plan} plan; it comes with the {having.title} plan.",
        code="plan_feature_unavailable",
    )
