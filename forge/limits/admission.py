"""One request's admission against every limit it is under, from this replica's leases.

A request passes every bucket of its key, project and organisation (``rules``) or none:
tokens taken from the buckets before the one that refused go back to their leases. A
request costs one of each requests bucket and its estimated tokens of each tokens bucket
(its body's bytes / 4 for the prompt, plus ``max_tokens`` or its kin when set, as OpenAI
counts them); once the real usage is known, ``Admitted.settle`` charges the difference.

Its figures become OpenAI's ``x-ratelimit-*`` headers (the tightest requests-per-minute
and tokens-per-minute buckets), on answers and on the 429 alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from forge.errors import RateLimited
from forge.keys import KeyInfo
from forge.limits.concurrency import ConcurrencyLeases
from forge.limits.lease import Decision, LeasedAdmission
from forge.limits.rules import BucketLimit, Kind, bucket_limits

BYTES_PER_TOKEN = 4
MAX_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
MAX_CACHED = 10_000
HEADER_KIND: dict[Kind, str] = {"rpm": "requests", "tpm": "tokens"}
LABEL: dict[Kind, str] = {
    "rpm": "requests per min (RPM)",
    "tpm": "tokens per min (TPM)",
    "rpd": "requests per day (RPD)",
    "concurrent": "concurrent requests",
}


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: ``20ms``, ``1s``, ``6m0s``, ``1h2m3.5s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    return f"{hours}h" + text if hours else text


def requested_output(body: Mapping[str, Any]) -> int | None:
    """The most output the request allows, when it says (``max_tokens`` and its kin)."""
    return next((v for f in MAX_OUTPUT_FIELDS if isinstance(v := body.get(f), int)), None)


def estimated_tokens(body: Mapping[str, Any], body_bytes: int) -> int:
    """The prompt from the body's size, plus the output it allows when it says."""
    output = requested_output(body) or 0
    return max(1, math.ceil(body_bytes / BYTES_PER_TOKEN) + max(0, output))


def rate_headers(decided: list[tuple[BucketLimit, Decision]]) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` of the tightest bucket
    of each kind (the one with the least remaining)."""
    headers: dict[str, str] = {}
    for kind, word in HEADER_KIND.items():
        of_kind = [(b, d) for b, d in decided if b.kind == kind]
        if not of_kind:
            continue
        bucket, decision = min(of_kind, key=lambda bd: bd[1].remaining)
        headers[f"x-ratelimit-limit-{word}"] = str(bucket.limit)
        headers[f"x-ratelimit-remaining-{word}"] = str(max(0, decision.remaining))
        headers[f"x-ratelimit-reset-{word}"] = duration(decision.reset_s)
    return headers


@dataclass(slots=True)
class Admitted:
    """An admitted request: its headers, how to settle its tokens afterwards, and the
    permits it holds while in flight (``release``, once, when it ends however it ends)."""

    headers: dict[str, str]
    token_buckets: tuple[str, ...]
    estimate: int
    leases: LeasedAdmission
    permits: tuple[str, ...] = ()
    concurrency: ConcurrencyLeases | None = None

    def settle(self, used_tokens: int) -> None:
        """Charge the real tokens against the estimate (an overestimate comes back)."""
        extra = used_tokens - self.estimate
        if extra:
            for name in self.token_buckets:
                self.leases.charge(name, extra)
        self.release()

    def release(self) -> None:
        """The request is over: its permits are free (idempotent)."""
        permits, self.permits = self.permits, ()
        if self.concurrency is not None:
            for name in permits:
                self.concurrency.exit(name)


class Admission:
    def __init__(
        self, leases: LeasedAdmission, concurrency: ConcurrencyLeases | None = None
    ) -> None:
        self.leases = leases
        self.concurrency = concurrency
        self._cache: dict[tuple[str, str], tuple[KeyInfo, tuple[BucketLimit, ...]]] = {}

    def limits(self, key: KeyInfo, model: str) -> tuple[BucketLimit, ...]:
        """The buckets of ``key``'s requests for ``model``, resolved once per verified
        key record (a changed rule arrives as a new record)."""
        if key.role == "platform":
            return ()
        cached = self._cache.get((key.id, model))
        if cached is not None and cached[0] is key:
            return cached[1]
        limits = bucket_limits(key.limits, key.plan, key.org_id, model)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key.id, model] = (key, limits)
        return limits

    async def admit(
        self, key: KeyInfo, model: str, body: Mapping[str, Any], body_bytes: int
    ) -> Admitted | None:
        """Admit or raise ``RateLimited`` (429, naming the limit); None when the key is
        under no limits."""
        limits = self.limits(key, model)
        if not limits:
            return None
        estimate = estimated_tokens(body, body_bytes)
        decided: list[tuple[BucketLimit, Decision]] = []
        permits: list[str] = []
        for bucket in limits:
            cost = estimate if bucket.kind == "tpm" else 1
            if bucket.kind == "concurrent":
                decision = await self._enter(bucket, permits)
            else:
                decision = await self.leases.admit(bucket.name, bucket.limit, cost, bucket.period_s)
            if not decision.allowed:
                for taken, _ in decided:
                    if taken.kind != "concurrent":
                        self.leases.refund(taken.name, estimate if taken.kind == "tpm" else 1)
                if self.concurrency is not None:
                    for name in permits:
                        self.concurrency.exit(name)
                raise self._refusal(key, model, bucket, decision, cost, decided)
            decided.append((bucket, decision))
        tokens = tuple(b.name for b in limits if b.kind == "tpm")
        return Admitted(
            rate_headers(decided), tokens, estimate, self.leases, tuple(permits), self.concurrency
        )

    async def _enter(self, bucket: BucketLimit, permits: list[str]) -> Decision:
        """A permit of a concurrent-requests limit, as a ``Decision`` (no replica that
        cannot hold permits enforces one)."""
        if self.concurrency is None:
            return Decision(True, bucket.limit, bucket.limit, 0.0)
        entry = await self.concurrency.enter(bucket.name, bucket.limit)
        if entry.backed:
            permits.append(bucket.name)
        return Decision(entry.allowed, bucket.limit, 0, 0.0, entry.retry_after_s)

    @staticmethod
    def _refusal(
        key: KeyInfo,
        model: str,
        bucket: BucketLimit,
        decision: Decision,
        cost: int,
        decided: list[tuple[BucketLimit, Decision]],
    ) -> RateLimited:
        scope, subject = bucket.name.split(":", 2)[:2]
        where = f"{'API key' if scope == 'key' else scope} {subject}"
        return RateLimited(
            f"Rate limit reached for {model} in {where} on {LABEL[bucket.kind]}: "
            f"Limit {bucket.limit}, Requested {cost}. "
            f"Please try again in {duration(decision.retry_after_s)}.",
            code="rate_limit_exceeded",
            retry_after=decision.retry_after_s,
            limit_headers=rate_headers([*decided, (bucket, decision)]),
        )
