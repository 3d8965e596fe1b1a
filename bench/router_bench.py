"""Routing's costs: the planner's decision time per strategy for a 50-target group, and
what a fallback adds to a request's latency, each against a baseline of the same run.

    .venv/bin/python -m bench.router_bench

1. Decision time: ``Planner.plan`` for a group of 50 targets (5 providers, mixed prices
   and capabilities, live in-flight counts and moving latencies) under each strategy,
   against the plan of a plain model with no fallbacks (today's lookup). Goal: ≤ 100 µs
   p50 with 50 targets.
2. A fallback's added latency: the real gateway app in-process (no Ray) over the fake
   OpenAI upstream; a model answered by its primary vs one whose primary fails at once
   (a 500) and whose fallback answers, with one try per target and with the default
   retry (two tries, backoff from 100 ms). Requests alternate one by one.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from forge.config import PlatformConfig
from forge.db.engine import make_engine
from forge.db.migrate import upgrade_async
from forge.routing.breakers import Breakers
from forge.routing.planner import Planner
from forge.routing.router import Router
from forge.routing.stats import RouteStats
from tests.fakes.openai_upstream import FakeOpenAI
from tests.unit.harness import in_process_gateway

STRATEGIES = ("priority", "weighted", "least_busy", "lowest_latency", "lowest_cost")
TARGETS = 50
DECISIONS = 20_000
REQUESTS = 300


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]


def decision_config() -> PlatformConfig:
    providers = [
        {"name": f"p{i}", "type": "openai_compatible", "base_url": f"http://p{i}/v1"}
        for i in range(5)
    ]
    rng = random.Random(3)
    models = [
        {
            "name": f"m{i}",
            "provider": f"p{i % 5}",
            "input_price_per_mtok": rng.uniform(0.1, 10),
            "output_price_per_mtok": rng.uniform(0.4, 30),
            "capabilities": {"vision": i % 7 != 0},
        }
        for i in range(TARGETS)
    ]
    groups = [
        {
            "name": strategy,
            "strategy": strategy,
            "targets": [
                {"model": f"m{i}", "weight": 1 + i % 4, "priority": i % 3} for i in range(TARGETS)
            ],
        }
        for strategy in STRATEGIES
    ]
    return PlatformConfig.model_validate(
        {"providers": providers, "models": models, "routing": {"groups": groups}}
    )


def decision_times() -> dict[str, tuple[float, float]]:
    config = decision_config()
    clients: dict[str, Any] = {p.name: object() for p in config.providers}
    router = Router(config.models, clients, None, config.routing.groups)
    stats = RouteStats()
    rng = random.Random(5)
    for i in range(TARGETS):
        for _ in range(rng.randrange(0, 4)):
            stats.started(f"m{i}")
        stats.observe(f"m{i}", rng.uniform(200, 2000), 20, first_token_ms=rng.uniform(50, 400))
    planner = Planner(Breakers(config.routing.breaker), stats)
    body = {
        "model": "x",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Summarise the quarterly report in three bullets."},
        ],
        "max_tokens": 200,
    }
    out = {}
    for name in ("m0", *STRATEGIES):
        route = router.route(name)
        samples = []
        for _ in range(DECISIONS):
            t0 = time.perf_counter_ns()
            planner.plan(route, body, 300)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        out[name] = _quantiles(samples)
    return out


def fallback_config(base_url: str, attempts: int) -> PlatformConfig:
    provider = {
        "type": "openai_compatible",
        "base_url": base_url,
        "api_key_env": "FAKE_UPSTREAM_KEY",
        "placement": "gateway",
    }
    return PlatformConfig.model_validate(
        {
            "providers": [{**provider, "name": "up"}],
            "models": [
                {"name": "direct", "provider": "up", "model": "gpt-fake"},
                {"name": "falls", "provider": "up", "model": "error-500", "fallbacks": ["direct"]},
            ],
            # the breaker would stop trying the failing primary: keep it closed here
            "routing": {"retry": {"attempts": attempts}, "breaker": {"failures": 10**9}},
        }
    )


async def fallback_latency(attempts: int) -> dict[str, tuple[float, float]]:
    fake = FakeOpenAI()
    fake.start()
    os.environ["FAKE_UPSTREAM_KEY"] = fake.api_key or ""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        await upgrade_async(url)
        engine = make_engine(url)
        try:
            async with in_process_gateway(fallback_config(fake.base_url, attempts), engine) as gw:
                headers = {"Authorization": f"Bearer {gw.user_key}"}
                times: dict[str, list[float]] = {"direct": [], "falls": []}

                async def one(model: str) -> None:
                    body: dict[str, Any] = {
                        "model": model,
                        "messages": [{"role": "user", "content": "hi"}],
                    }
                    t0 = time.perf_counter()
                    resp = await gw.http.post("/v1/chat/completions", json=body, headers=headers)
                    assert resp.status_code == 200, resp.text
                    times[model].append((time.perf_counter() - t0) * 1000)

                for _ in range(20):  # warm-up
                    await one("direct")
                    await one("falls")
                times = {"direct": [], "falls": []}
                for _ in range(REQUESTS):
                    await one("direct")
                    await one("falls")
                return {m: _quantiles(t) for m, t in times.items()}
        finally:
            await engine.dispose()
            fake.stop()


def main() -> None:
    print(f"Decision time, {TARGETS}-target group, {DECISIONS} plans each (µs):")
    figures = decision_times()
    base_p50, _ = figures["m0"]
    print(f"  {'route':<16}{'p50':>8}{'p99':>8}{'x plain':>9}")
    for name, (p50, p99) in figures.items():
        label = "plain model" if name == "m0" else name
        print(f"  {label:<16}{p50:>8.1f}{p99:>8.1f}{p50 / base_p50:>9.1f}")
    worst = max(p50 for name, (p50, _) in figures.items() if name != "m0")
    print(f"  goal ≤ 100 µs p50: {'met' if worst <= 100 else 'MISSED'} (worst {worst:.1f} µs)")
    for attempts in (1, 2):
        res = asyncio.run(fallback_latency(attempts))
        (d50, d99), (f50, f99) = res["direct"], res["falls"]
        print(
            f"Fallback after an instant 500, {attempts} tr{'y' if attempts == 1 else 'ies'} "
            f"per target ({REQUESTS} each, ms): direct p50 {d50:.2f} p99 {d99:.2f}; "
            f"via fallback p50 {f50:.2f} p99 {f99:.2f}; added p50 {f50 - d50:+.2f} "
            f"p99 {f99 - d99:+.2f}"
        )


if __name__ == "__main__":
    main()
