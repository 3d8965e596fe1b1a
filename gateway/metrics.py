"""`GET /metrics`: the platform in Prometheus' text format, the whole cluster's whichever
replica answers.

Traffic (requests, latency, TTFT, tokens, cost) comes from the usage recorder, which
counts every stored record once (``forge.usage_metrics``). The state of the parts is read
at scrape time from where it already lives: components' health from the replica's
readiness checks, open breakers from the shared board, engines' batch and queue and
gateway replicas' unshipped records from the directory's replica reports. A source that
does not answer is left out, and says so as ``forge_component_up 0``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from forge.routing.breakers import BreakerNews

log = logging.getLogger(__name__)
SOURCE_TIMEOUT_S = 5.0


@dataclass
class MetricsSources:
    usage: Callable[[], Awaitable[bytes]]  # the recorder's exposition
    breakers: Callable[[], Awaitable[BreakerNews]] | None = None  # the shared board
    replicas: Callable[[], Awaitable[dict[str, dict[str, Any]]]] | None = None  # reports


async def _ask(what: str, call: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await asyncio.wait_for(call(), SOURCE_TIMEOUT_S)
    except Exception as exc:
        log.warning("metrics source %s failed: %s", what, type(exc).__name__)
        return None


async def scrape(
    sources: MetricsSources,
    readiness: Callable[[], Awaitable[dict[str, bool]]],
    targets: list[str],
    now: float,
) -> bytes:
    """The exposition: the recorder's traffic metrics, then this scrape's gauges.
    ``targets``: every routable model name (a closed breaker is a 0, not a gap)."""
    usage, components, board, replicas = await asyncio.gather(
        _ask("usage", sources.usage),
        _ask("readiness", readiness),
        _ask("breakers", sources.breakers) if sources.breakers else _none(),
        _ask("replicas", sources.replicas) if sources.replicas else _none(),
    )
    r = CollectorRegistry(auto_describe=True)
    up = Gauge("forge_component_up", "1: the part answers its check.", ["component"], registry=r)
    for name, ok in (components or {}).items():
        up.labels(name).set(1 if ok else 0)
    up.labels("metrics:usage-recorder").set(0 if usage is None else 1)
    if sources.breakers is not None:
        up.labels("metrics:breaker-board").set(0 if board is None else 1)
    if board is not None:
        opened = Gauge(
            "forge_breaker_open",
            "1: the target's breaker is open (no traffic until its probe).",
            ["target"],
            registry=r,
        )
        until = Gauge(
            "forge_breaker_open_until_seconds",
            "When an open breaker lets its probe through (Unix time).",
            ["target"],
            registry=r,
        )
        for name in targets:
            opening = board.open.get(name)
            is_open = opening is not None and opening.until > now
            opened.labels(name).set(1 if is_open else 0)
            if is_open:
                until.labels(name).set(opening.until)
    if replicas is not None:
        _replica_gauges(r, replicas)
    return (usage or b"") + generate_latest(r)


async def _none() -> None:
    return None


# A model replica's engine stats (serve.models.engine.EngineStats) -> its gauges: the
# stat, the metric, its help. A stat the engine leaves None gets no sample (not a 0).
ENGINE_GAUGES = (
    ("running", "forge_engine_running", "Requests generating (the batch)."),
    ("waiting", "forge_engine_waiting", "Requests queued for a batch slot."),
    ("adapters", "forge_engine_adapters_loaded", "LoRA adapters held."),
    ("kv_tokens", "forge_engine_kv_tokens", "Tokens the running requests hold in the KV cache."),
    (
        "kv_capacity_tokens",
        "forge_engine_kv_capacity_tokens",
        "Tokens the KV cache allocated now can hold (the slot batch).",
    ),
)


def _replica_gauges(r: CollectorRegistry, replicas: dict[str, dict[str, Any]]) -> None:
    engine = {
        stat: Gauge(name, help_text, ["provider", "replica"], registry=r)
        for stat, name, help_text in ENGINE_GAUGES
    }
    pending = Gauge(
        "forge_usage_pending_records",
        "Usage records a gateway replica holds, not yet stored.",
        ["replica"],
        registry=r,
    )
    queued = Gauge(
        "forge_provider_queue_depth",
        "Requests a gateway replica holds back for a provider account's rate limits.",
        ["provider", "replica"],
        registry=r,
    )
    answered = CounterMetricFamily(
        "forge_gateway_errors",
        "Error answers of a gateway replica by HTTP status and code: the platform's own "
        "refusals (no usage record) and providers' failures alike.",
        labels=["status", "code", "replica"],
    )
    for replica, stats in replicas.items():
        if stats.get("gateway"):
            for provider, depth in (stats.get("provider_queues") or {}).items():
                queued.labels(str(provider), replica).set(depth)
            for what, count in (stats.get("errors") or {}).items():
                status, _, code = str(what).partition(" ")
                answered.add_metric([status, code, replica], count)
        if "provider" in stats and "running" in stats:
            labels = (str(stats["provider"]), replica)
            for stat, gauge in engine.items():
                figure = stats.get(stat)
                if isinstance(figure, list):
                    figure = len(figure)
                if figure is not None:
                    gauge.labels(*labels).set(figure)
        usage = stats.get("usage")
        if stats.get("gateway") and isinstance(usage, dict):
            pending.labels(replica).set(usage.get("pending", 0))
    r.register(_Families([answered]))


class _Families(Collector):
    """Metric families built at scrape time (counters reported by the replicas)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families
