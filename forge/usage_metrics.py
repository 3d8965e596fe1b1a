"""Prometheus metrics of the platform's traffic, counted from the usage records.

Counted where every record already arrives once: the usage recorder, after the commit,
from the records the database took as new (a batch sent twice, or a dead replica's spool
replayed, is counted once, as it is stored once). So the figures are the whole
cluster's whatever replica answers the scrape, cost nothing on the request path, and
agree with the ledger and the usage reports; what they lag is one shipment (~50 ms).
A restarted recorder starts its counters at zero, which Prometheus' ``rate`` reads as a
counter reset.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from forge.usage import UsageEvent

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SCOPE = ("provider", "model", "organization", "project")


class UsageMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "forge_requests",
            "Requests that reached a provider, by how they ended.",
            ["endpoint", *SCOPE, "status", "http_status", "stream"],
            registry=r,
        )
        self.latency = Histogram(
            "forge_request_duration_seconds",
            "Whole request time as the gateway saw it (to the last byte).",
            ["provider", "model", "stream"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.ttft = Histogram(
            "forge_time_to_first_token_seconds",
            "Streams: time from the request's arrival to its first chunk.",
            ["provider", "model"],
            buckets=TTFT_BUCKETS_S,
            registry=r,
        )
        self.tokens = Counter(
            "forge_tokens", "Tokens, prompt and completion.", [*SCOPE, "kind"], registry=r
        )
        self.cost = Counter("forge_cost_usd", "Cost in US dollars.", list(SCOPE), registry=r)

    def observe(self, events: Iterable[UsageEvent]) -> None:
        """Count records newly stored."""
        for e in events:
            scope = (e.provider, e.model, e.org_id or "", e.project_id or "")
            stream = "true" if e.stream else "false"
            self.requests.labels(e.endpoint, *scope, e.status, str(e.http_status), stream).inc()
            self.latency.labels(e.provider, e.model, stream).observe(e.latency_ms / 1000)
            if e.stream and e.ttft_ms is not None:
                self.ttft.labels(e.provider, e.model).observe(e.ttft_ms / 1000)
            if e.prompt_tokens:
                self.tokens.labels(*scope, "prompt").inc(e.prompt_tokens)
            if e.completion_tokens:
                self.tokens.labels(*scope, "completion").inc(e.completion_tokens)
            if e.cost_usd:
                self.cost.labels(*scope).inc(e.cost_usd)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
