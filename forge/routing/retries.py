"""What a failed call to a target leads to: the same target again after a backoff, the
next target, or the caller's error.

- The provider's failures (5xx, timeouts, resets) are retried on the same target with
  exponential backoff and full jitter, up to ``attempts`` tries, then the next target
  is tried; each counts towards its breaker. The platform's own proxy restarting goes
  to the next target at once (a retry would wait for the replica's successor to load).
- The provider's 429 is waited out when its ``Retry-After`` is short (≤
  ``max_retry_after_s``); a longer one cools the target down for that long (every replica
  stops sending to it) and the next target is tried at once.
- A content-policy refusal goes to the next target (another model may answer it) but is
  no fault of the target's.
- Everything else (the caller's 400s, the platform's own limits) fails the request.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from forge.config import RetryConfig
from forge.errors import (
    ForgeError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamRateLimited,
)

# OpenAI's code for a prompt its moderation refused, and Azure OpenAI's.
REFUSAL_CODES = frozenset({"content_policy_violation", "content_filter"})

Action = Literal["retry", "next", "fail"]


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    delay_s: float = 0.0  # before the retry
    cool_down_s: float | None = None  # keep every replica off the target this long
    target_failed: bool = False  # counts towards the target's breaker


FAIL = Verdict("fail")


class RetryPolicy:
    def __init__(self, config: RetryConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()

    def backoff_s(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)]; ``attempt`` 0 is the
        wait before the first retry."""
        cap = min(self.config.max_delay_s, self.config.base_delay_s * 2**attempt)
        return self._rng.uniform(0, cap)

    def after(self, error: ForgeError, attempt: int) -> Verdict:
        """The verdict on ``error`` from try number ``attempt`` (0: the first) of a target."""
        more = attempt + 1 < self.config.attempts
        if isinstance(error, UpstreamRateLimited):
            wait = error.retry_after
            if wait is not None and wait > self.config.max_retry_after_s:
                return Verdict("next", cool_down_s=wait)
            if not more:
                return Verdict("next")
            return Verdict("retry", wait if wait is not None else self.backoff_s(attempt))
        if isinstance(error, UpstreamError):
            if more:
                return Verdict("retry", self.backoff_s(attempt), target_failed=True)
            return Verdict("next", target_failed=True)
        if isinstance(error, ServiceUnavailable):
            # a part of the platform restarting (a model replica replaced): a retry would
            # wait on the same handle for its successor to load, so the next target now
            return Verdict("next", target_failed=True)
        if isinstance(error, InvalidRequest) and error.code in REFUSAL_CODES:
            return Verdict("next")
        return FAIL
