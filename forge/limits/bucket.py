"""A token bucket quantized like OpenAI's limits: "600 requests per minute" is enforced as
10 a second with a burst of ``burst_s`` seconds' worth (OpenAI: "rate limits may be
quantized ... enforced over shorter periods"), so no 60-second window admits more than
``limit * (1 + burst_s / 60)``, however the traffic is shaped."""

from __future__ import annotations

import math
from dataclasses import dataclass

MINUTE_S = 60.0


@dataclass
class TokenBucket:
    limit_per_min: int
    burst_s: float
    level: float
    updated: float  # the clock's time of ``level``

    @classmethod
    def full(cls, limit_per_min: int, burst_s: float, now: float) -> TokenBucket:
        bucket = cls(limit_per_min, burst_s, 0.0, now)
        bucket.level = bucket.capacity
        return bucket

    @property
    def rate(self) -> float:
        """Tokens a second."""
        return self.limit_per_min / MINUTE_S

    @property
    def capacity(self) -> float:
        """The burst: at least one whole token, so that any limit admits something."""
        return max(1.0, self.rate * self.burst_s)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, want: int, now: float) -> int:
        """Up to ``want`` whole tokens, as many as there are."""
        self.refill(now)
        granted = min(want, math.floor(self.level + 1e-9))
        self.level -= granted
        return max(granted, 0)

    def give_back(self, tokens: int, now: float) -> None:
        """Unused tokens of an expired lease (never above the capacity)."""
        self.refill(now)
        self.level = min(self.capacity, self.level + tokens)

    def wait_s(self, now: float) -> float:
        """Seconds until one token is there."""
        self.refill(now)
        return 0.0 if self.level >= 1 else (1 - self.level) / self.rate

    def until_full_s(self, now: float) -> float:
        self.refill(now)
        return (self.capacity - self.level) / self.rate
