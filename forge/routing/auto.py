"""`model="auto"` and `auto:<policy>`: classify the request, then choose a model by the
policy in the config.

The classifier is a handful of cheap checks on the request (microseconds, no model):
images → vision, tools → tools, a long prompt → long_context, code fences or code-like
lines in the last user turn → code, asking for a summary → summarise, asking for
fields, a list or JSON out of a text → extract, else chat. The kind picks nothing by
itself: models that list it among their ``strengths`` go first, each group ordered by
the policy's preference, so a code request goes to a code model when the policy allows
one and to the policy's usual choice otherwise. Candidates are the models with a
``quality`` (or the policy's ``models``), that can serve the request, at or above its
quality floor, within its cost ceiling and latency target. The route is a priority
route of the chosen order (the rest are fallbacks), explained in ``x-forge-route`` and
the usage record (``auto=<kind>/<prefer>``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from forge.config import AutoConfig, AutoPolicy, TaskKind
from forge.errors import InvalidRequest
from forge.routing.planner import BYTES_PER_TOKEN, EXPECTED_OUTPUT_TOKENS, estimated_cost
from forge.routing.router import Route, Router, Target
from forge.routing.stats import RouteStats
from forge.routing.tokens import chat_text

AUTO = "auto"
CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import|function |const |let |var |public |#include|"
    r"SELECT |INSERT |UPDATE |CREATE TABLE|fn |func |package |using |\}|</?\w+>)",
    re.MULTILINE,
)
CODE_WORDS = re.compile(
    r"\b(traceback|stack trace|exception|compile|refactor|unit test|regex|function|bug)\b", re.I
)
SUMMARY = re.compile(r"\b(summari[sz]e|summary|tl;?dr|in short|key points|recap)\b", re.I)
EXTRACT = re.compile(
    r"\b(extract|pull out|list (all|every)|as json|into json|fields?|parse|entities)\b", re.I
)


@dataclass(frozen=True, slots=True)
class Classification:
    kind: TaskKind
    prompt_tokens: int  # estimated


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) else ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    p["text"]
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    return ""


def _has_image(body: dict[str, Any]) -> bool:
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in content
        ):
            return True
    return False


def classify(body: dict[str, Any], long_context_tokens: int) -> Classification:
    texts, _ = chat_text(body)
    tokens = math.ceil(sum(len(t) for t in texts) / BYTES_PER_TOKEN)
    if _has_image(body):
        return Classification("vision", tokens)
    if body.get("tools") or body.get("functions"):
        return Classification("tools", tokens)
    if tokens >= long_context_tokens:
        return Classification("long_context", tokens)
    text = _last_user_text(body)
    if "```" in text or len(CODE_LINE.findall(text)) >= 2 or CODE_WORDS.search(text):
        return Classification("code", tokens)
    if SUMMARY.search(text):
        return Classification("summarise", tokens)
    if EXTRACT.search(text):
        return Classification("extract", tokens)
    return Classification("chat", tokens)


NEEDS = {"vision": "vision", "tools": "tools"}  # kinds that need a capability


class AutoRouter:
    def __init__(self, config: AutoConfig, router: Router, stats: RouteStats) -> None:
        self.config = config
        self._router = router
        self._stats = stats

    @staticmethod
    def is_auto(name: str) -> bool:
        return name == AUTO or name.startswith(AUTO + ":")

    def policy(self, name: str) -> tuple[str, AutoPolicy]:
        policy_name = name.partition(":")[2] or self.config.default_policy
        policy = self.config.policies.get(policy_name)
        if policy is None:
            raise InvalidRequest(
                f"Unknown auto policy {policy_name!r}; the policies are "
                f"{', '.join(sorted(self.config.policies))}.",
                param="model",
                code="model_not_found",
            )
        return policy_name, policy

    def route(self, name: str, body: dict[str, Any]) -> Route:
        """The route ``auto`` (or ``auto:<policy>``) takes for ``body``; a 400 saying why
        when the policy leaves no model."""
        policy_name, policy = self.policy(name)
        c = classify(body, self.config.long_context_tokens)
        wanted = body.get("max_completion_tokens") or body.get("max_tokens")
        output = wanted if isinstance(wanted, int) and wanted > 0 else EXPECTED_OUTPUT_TOKENS
        candidates = self._candidates(policy, c, output)
        if not candidates:
            raise InvalidRequest(
                f"The auto policy {policy_name!r} has no model for this {c.kind} request "
                f"(quality ≥ {policy.quality_floor:g}"
                + (f", ≤ {policy.cost_ceiling_usd:g} USD" if policy.cost_ceiling_usd else "")
                + (f", ≤ {policy.latency_target_ms:g} ms" if policy.latency_target_ms else "")
                + (f", able to take {NEEDS[c.kind]}" if c.kind in NEEDS else "")
                + ").",
                param="model",
                code="route_limits_unmet",
            )

        def rank(t: Target) -> tuple[bool, float]:
            strong = c.kind not in t.model.strengths
            if policy.prefer == "best":
                return strong, -(t.model.quality or 0.0)
            if policy.prefer == "fastest":
                ms = self._stats.of(t.model.name).expected_ms(output)
                return strong, -1.0 if ms is None else ms
            return strong, estimated_cost(t, c.prompt_tokens, output)

        ordered = sorted(candidates, key=rank)
        targets = tuple(
            Target(t.model, t.client, t.weight, priority=i) for i, t in enumerate(ordered)
        )
        return Route(
            f"{AUTO}:{policy_name}",
            targets,
            group=True,
            note=f"auto={c.kind}/{policy.prefer}",
        )

    def _candidates(self, policy: AutoPolicy, c: Classification, output: int) -> list[Target]:
        names = policy.models
        if names is None:
            names = [m.name for m in self._router.models if m.quality is not None]
        out = []
        for name in names:
            target = self._router.route(name).primary
            model = target.model
            if (model.quality or 0.0) < policy.quality_floor:
                continue
            if c.kind == "vision" and not model.capabilities.vision:
                continue
            if c.kind == "tools" and not model.capabilities.tools:
                continue
            if policy.cost_ceiling_usd is not None and (
                estimated_cost(target, c.prompt_tokens, output) > policy.cost_ceiling_usd
            ):
                continue
            if policy.latency_target_ms is not None:
                ms = self._stats.of(name).expected_ms(output)
                if ms is not None and ms > policy.latency_target_ms:
                    continue
            out.append(target)
        return out
