"""A token bucket quantized like OpenAI's limits: "600 requests per minute" is enforced as
10 a second with a burst of ``burst_s`` seconds' worth (OpenAI: "rate limits may be
quantized ... enforced over shorter periods"), so no 60-second window admits more than
``limit * (1 + burst_s / 60)``, however the traffic is shaped.

A request bigger than the whole burst (a long prompt against tokens/min) is not refused
for ever: it is let through when the bucket is full and leaves it in debt, which the
refill pays back before anything else is admitted. Charges after the fact (the real
tokens of an answer) may leave debt the same way."""

from __future__ import annotations

import math
from dataclasses import dataclass

MINUTE_S = 60.0


@dataclass
class TokenBucket:
    limit: int  # tokens per ``period_s``
    period_s: float
    burst_s: float
    level: float  # may be negative: debt
    updated: float  # the clock's time of ``level``

    @classmethod
    def full(
        cls, limit: int, burst_s: float, now: float, period_s: float = MINUTE_S
    ) -> TokenBucket:
        bucket = cls(limit, period_s, burst_s, 0.0, now)
        bucket.level = bucket.capacity
        return bucket

    @property
    def rate(self) -> float:
        """Tokens a second."""
        return self.limit / self.period_s

    @property
    def capacity(self) -> float:
        """The burst: at least one whole token, so that any limit admits something."""
        return max(1.0, self.rate * self.burst_s)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def _threshold(self, need: int) -> float:
        """The level at which ``need`` tokens are granted: ``need`` itself, or a full
        bucket for a need larger than the burst."""
        return min(float(need), self.capacity)

    def take(self, want: int, now: float, need: int = 1) -> int:
        """Up to ``want`` whole tokens, as many as there are, provided there are ``need``
        (0 otherwise); a ``need`` above the burst is granted whole from a full bucket."""
        self.refill(now)
        if self.level + 1e-9 < self._threshold(need):
            return 0
        granted = max(need, min(want, math.floor(self.level + 1e-9)))
        self.level -= granted
        return granted

    def give_back(self, tokens: int, now: float) -> None:
        """Unused tokens of an expired lease (never above the capacity), or, negative,
        tokens it spent beyond what it was granted."""
        self.refill(now)
        self.level = min(self.capacity, self.level + tokens)

    def wait_s(self, now: float, need: int = 1) -> float:
        """Seconds until ``need`` tokens are there."""
        self.refill(now)
        return max(0.0, (self._threshold(need) - self.level) / self.rate)

    def until_full_s(self, now: float) -> float:
        self.refill(now)
        return (self.capacity - self.level) / self.rate
