"""What this replica has seen of each target: requests in flight and moving latencies,
for the ``least_busy`` and ``lowest_latency`` strategies.

Per replica on purpose: the figures are read on every routed request, and each replica
sees enough traffic of its own for a moving average; sharing them would put an actor
call on the hot path for no better decision.
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHA = 0.2  # weight of the newest observation in the moving averages


@dataclass(slots=True)
class TargetStats:
    in_flight: int = 0
    ttft_ms: float | None = None  # moving time to first token (whole answer if unstreamed)
    per_token_ms: float | None = None  # moving time per output token after the first

    def expected_ms(self, output_tokens: int) -> float | None:
        """How long an answer of ``output_tokens`` should take here; None: never seen."""
        if self.ttft_ms is None:
            return None
        return self.ttft_ms + (self.per_token_ms or 0.0) * max(output_tokens - 1, 0)


def _moved(old: float | None, new: float) -> float:
    return new if old is None else old + ALPHA * (new - old)


class RouteStats:
    def __init__(self) -> None:
        self._stats: dict[str, TargetStats] = {}

    def of(self, key: str) -> TargetStats:
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = TargetStats()
        return stats

    def started(self, key: str) -> None:
        self.of(key).in_flight += 1

    def ended(self, key: str) -> None:
        stats = self.of(key)
        stats.in_flight = max(stats.in_flight - 1, 0)

    def observe(
        self, key: str, total_ms: float, output_tokens: int, first_token_ms: float | None
    ) -> None:
        """A finished answer. Unstreamed (``first_token_ms`` None), its first token's
        time is the whole time less the moving per-token time of the rest."""
        stats = self.of(key)
        rest = max(output_tokens - 1, 0)
        if first_token_ms is None:
            first_token_ms = max(total_ms - (stats.per_token_ms or 0.0) * rest, 0.0)
        elif rest and total_ms > first_token_ms:
            per_token = (total_ms - first_token_ms) / rest
            stats.per_token_ms = _moved(stats.per_token_ms, per_token)
        stats.ttft_ms = _moved(stats.ttft_ms, first_token_ms)
