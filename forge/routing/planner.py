"""The order in which one request tries its route's targets.

Per request: drop the targets that cannot serve it (capabilities), that its own limits
rule out (excluded providers, over its cost ceiling or latency target) or whose breaker
is open; order the rest by the route's strategy; put its preferred providers first. The
first target is the choice and the rest are its fallbacks, so a group and a model with
fallbacks are tried the same way.

This is on every request's path: the goal is ≤ 100 µs p50 for a 50-target group
(``bench/router_bench.py``), so the work per target is a few attribute reads and one
dictionary lookup in each of the breakers and the stats.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forge.errors import (
    ContextLengthExceeded,
    ForgeError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamRateLimited,
)
from forge.routing.breakers import Breakers
from forge.routing.capabilities import check_request
from forge.routing.limits import MAX_COST, MAX_LATENCY, NO_LIMITS, RouteLimits
from forge.routing.router import Route, Target
from forge.routing.stats import RouteStats
from forge.routing.tokens import Count, TokenCounter

BYTES_PER_TOKEN = 4  # the prompt's tokens, estimated from its size (as the rate limits do)
EXPECTED_OUTPUT_TOKENS = 256  # a request that does not say how much it wants


@dataclass(slots=True)
class Plan:
    """``targets``: to try in this order; ``skipped``: (target, why) left out."""

    route: Route
    targets: list[Target]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def explain(self, chosen: Target) -> str:
        """The ``x-forge-route`` header: the route, its strategy, who answered, and
        who was passed over on the way (tried and failed, or skipped before trying)."""
        route = self.route
        note = f"; {route.note}" if route.note else ""
        text = f"{route.name}; strategy={route.strategy}{note}; target={chosen.model.name}"
        passed = [t.model.name for t in self.targets[: self.targets.index(chosen)]]
        if passed:
            text += "; failed=" + ",".join(passed)
        if self.skipped:
            text += "; skipped=" + ",".join(f"{name}({why})" for name, why in self.skipped)
        return text


def estimated_cost(target: Target, prompt_tokens: int, output_tokens: int) -> float:
    model = target.model
    return (
        prompt_tokens * model.input_price_per_mtok + output_tokens * model.output_price_per_mtok
    ) / 1_000_000


def _servable(targets: tuple[Target, ...], body: dict[str, Any]) -> list[Target]:
    """The targets whose capabilities serve ``body``: checked once per distinct set of
    capabilities, not once per target."""
    verdicts: dict[tuple[bool, bool, bool], bool] = {}
    out = []
    for target in targets:
        caps = target.model.capabilities
        kind = (caps.tools, caps.vision, caps.json_mode)
        ok = verdicts.get(kind)
        if ok is None:
            try:
                check_request(target.model, body)
                ok = True
            except InvalidRequest:
                ok = False
            verdicts[kind] = ok
        if ok:
            out.append(target)
    return out


Order = Callable[["Planner", list[Target], int, int], list[Target]]


class Planner:
    def __init__(
        self,
        breakers: Breakers,
        stats: RouteStats,
        rng: random.Random | None = None,
        tokens: TokenCounter | None = None,
    ) -> None:
        self.breakers = breakers
        self.stats = stats
        self.tokens = tokens or TokenCounter([])  # no providers known: estimates
        self._rng = rng or random.Random()
        self._orders: dict[str, Order] = {
            "priority": Planner._by_priority,
            "weighted": Planner._by_weight,
            "least_busy": Planner._by_load,
            "lowest_latency": Planner._by_latency,
            "lowest_cost": Planner._by_cost,
        }

    def plan(
        self,
        route: Route,
        body: dict[str, Any],
        body_bytes: int,
        limits: RouteLimits = NO_LIMITS,
    ) -> Plan:
        """The targets to try; a 400 when the request's own limits leave none, a 503
        saying until when when every target's breaker is open."""
        prompt = math.ceil(body_bytes / BYTES_PER_TOKEN)
        wanted = body.get("max_completion_tokens") or body.get("max_tokens")
        output = wanted if isinstance(wanted, int) and wanted > 0 else EXPECTED_OUTPUT_TOKENS
        plan = Plan(route, [])
        if route.group:
            candidates = _servable(route.targets, body)
            if not candidates:  # the first target's 400 names what none can serve
                check_request(route.primary.model, body)
        else:  # the model asked for must serve it; its fallbacks are dropped if not
            check_request(route.primary.model, body)
            candidates = [route.primary, *_servable(route.targets[1:], body)]
        candidates = self._fitting(plan, candidates, body, body_bytes)
        if not limits.none:
            candidates = self._within(plan, candidates, limits, prompt, output)
        blocked: list[tuple[Target, float]] = []
        usable = []
        for target in candidates:
            until = self.breakers.blocked_until(target.model.name)
            if until is None:
                usable.append(target)
            else:
                blocked.append((target, until))
                plan.skipped.append((target.model.name, "cooling down"))
        if not usable:
            lone = candidates[0] if len(candidates) == 1 else None
            if lone is None or self.breakers.rate_limited(lone.model.name):
                raise _cooling_down(route, blocked, self.breakers)
            # Nothing to route around: the provider's own answer (502 while it is down,
            # the answer as soon as it is back) beats a 503 for the rest of a cooldown.
            # Its 429 with a long Retry-After still holds it back: it said to wait.
            usable = candidates
            plan.skipped.clear()
        ordered = self._orders[route.strategy](self, usable, prompt, output)
        if limits.prefer:
            preferred = set(limits.prefer)
            ordered.sort(key=lambda t: t.model.provider not in preferred)  # stable
        plan.targets = ordered
        return plan

    def _fitting(
        self, plan: Plan, candidates: list[Target], body: dict[str, Any], body_bytes: int
    ) -> list[Target]:
        """The candidates whose context window holds the prompt and the output asked for;
        if none does, the route's ``context_window_fallbacks`` that do; a 400
        ``context_length_exceeded`` if those do not either. A prompt counts only when its
        size alone could overflow a window (tokens never outnumber bytes)."""
        wanted = body.get("max_completion_tokens") or body.get("max_tokens")
        output = wanted if isinstance(wanted, int) and wanted > 0 else 0
        if all(
            t.model.context_window is None or body_bytes + output <= t.model.context_window
            for t in candidates
        ):
            return candidates
        counts: dict[str, Count] = {}
        fit, closest = self._fit(plan, candidates, body, output, counts)
        if not fit and plan.route.larger:
            fit, closest_larger = self._fit(plan, list(plan.route.larger), body, output, counts)
            closest = closest_larger or closest
        if fit:
            return fit
        assert closest is not None
        window, count = closest
        raise ContextLengthExceeded(
            f"This model's maximum context length is {window} tokens. However, you "
            f"requested {count.tokens + output} tokens ({count.tokens} in the messages"
            f"{'' if count.exact else ', estimated'}, {output} in the completion). Please "
            "reduce the length of the messages or completion.",
            # as the engines say it: the prompt alone too long, or with max_tokens
            param="messages" if count.tokens >= window else "max_tokens",
        )

    def _fit(
        self,
        plan: Plan,
        targets: list[Target],
        body: dict[str, Any],
        output: int,
        counts: dict[str, Count],
    ) -> tuple[list[Target], tuple[int, Count] | None]:
        fit, closest = [], None
        for t in targets:
            window = t.model.context_window
            if window is None:
                fit.append(t)
                continue
            family = self.tokens.family(t.model)
            count = counts.get(family) or counts.setdefault(
                family, self.tokens.count(t.model, body)
            )
            if count.tokens + output <= window:
                fit.append(t)
            else:
                plan.skipped.append((t.model.name, f"{count.tokens} tokens > window {window}"))
                if closest is None or window > closest[0]:
                    closest = (window, count)
        return fit, closest

    def _within(
        self,
        plan: Plan,
        candidates: list[Target],
        limits: RouteLimits,
        prompt: int,
        output: int,
    ) -> list[Target]:
        kept = [t for t in candidates if t.model.provider not in limits.exclude]
        for t in candidates:
            if t.model.provider in limits.exclude:
                plan.skipped.append((t.model.name, "excluded"))
        if not kept:
            raise InvalidRequest(
                f"Every target of {plan.route.name!r} is on an excluded provider.",
                param="x-forge-exclude-providers",
                code="route_limits_unmet",
            )
        if limits.max_cost_usd is not None:
            costs = {t.model.name: estimated_cost(t, prompt, output) for t in kept}
            cheap = [t for t in kept if costs[t.model.name] <= limits.max_cost_usd]
            if not cheap:
                cheapest = min(kept, key=lambda t: costs[t.model.name])
                raise InvalidRequest(
                    f"{MAX_COST} {limits.max_cost_usd:g} USD is below what any target of "
                    f"{plan.route.name!r} costs for this request (~{prompt} prompt and "
                    f"{output} output tokens): the cheapest, {cheapest.model.name!r}, costs "
                    f"~{costs[cheapest.model.name]:.6f} USD.",
                    param=MAX_COST,
                    code="route_limits_unmet",
                )
            plan.skipped += [(t.model.name, "over max cost") for t in kept if t not in cheap]
            kept = cheap
        if limits.max_latency_ms is not None:
            fast, slow = [], []
            for t in kept:
                expected = self.stats.of(t.model.name).expected_ms(output)
                if expected is None or expected <= limits.max_latency_ms:
                    fast.append(t)
                else:
                    slow.append((t.model.name, f"~{expected:.0f} ms"))
            if not fast:
                raise InvalidRequest(
                    f"{MAX_LATENCY} {limits.max_latency_ms:g} is below the moving latency of "
                    f"every target of {plan.route.name!r} for {output} output tokens "
                    f"({', '.join(f'{n}: {w}' for n, w in slow)}).",
                    param=MAX_LATENCY,
                    code="route_limits_unmet",
                )
            plan.skipped += slow
            kept = fast
        return kept

    # ---------------------------------------------------------------- strategies
    def _by_priority(self, targets: list[Target], prompt: int, output: int) -> list[Target]:
        if len({t.priority for t in targets}) == len(targets):
            return sorted(targets, key=lambda t: t.priority)
        # equal priorities share their traffic by weight
        keys = {id(t): (t.priority, -self._weight_key(t)) for t in targets}
        return sorted(targets, key=lambda t: keys[id(t)])

    def _by_weight(self, targets: list[Target], prompt: int, output: int) -> list[Target]:
        # Efraimidis-Spirakis: sorting by u**(1/w) draws a weighted order without repeats
        keys = {id(t): self._weight_key(t) for t in targets}
        return sorted(targets, key=lambda t: keys[id(t)], reverse=True)

    def _weight_key(self, target: Target) -> float:
        return float(self._rng.random() ** (1.0 / target.weight))

    def _by_load(self, targets: list[Target], prompt: int, output: int) -> list[Target]:
        stats = self.stats
        return sorted(targets, key=lambda t: (stats.of(t.model.name).in_flight, -t.weight))

    def _by_latency(self, targets: list[Target], prompt: int, output: int) -> list[Target]:
        stats = self.stats

        def expected(t: Target) -> float:
            ms = stats.of(t.model.name).expected_ms(output)
            return -1.0 if ms is None else ms  # unseen targets first: learn them

        return sorted(targets, key=expected)

    def _by_cost(self, targets: list[Target], prompt: int, output: int) -> list[Target]:
        return sorted(targets, key=lambda t: (estimated_cost(t, prompt, output), t.priority))


COOLING_DOWN = "targets_cooling_down"


def _cooling_down(
    route: Route, blocked: list[tuple[Target, float]], breakers: Breakers
) -> ForgeError:
    """A 503 saying which targets are cooling down, why, and when the first is back; a
    429 when it is the providers' own rate limits that hold every one of them back."""
    soonest = min(until for _, until in blocked)
    wait = max(soonest - breakers.now(), 0.1)
    reasons = "; ".join(
        f"{t.model.name}: {breakers.reason(t.model.name) or 'probe in flight'}" for t, _ in blocked
    )
    message = (
        f"Every target of {route.name!r} is cooling down ({reasons}); the first is tried "
        f"again in {wait:.1f} s."
    )
    if all(breakers.rate_limited(t.model.name) for t, _ in blocked):
        return UpstreamRateLimited(message, code=COOLING_DOWN, retry_after=wait)
    return ServiceUnavailable(message, code=COOLING_DOWN, retry_after=wait)
