"""`/metrics`: traffic counted once per stored record, the parts' state read at scrape
time, the exposition parsed back with Prometheus' own parser."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.usage_recorder import UsageStore
from forge.db.migrate import upgrade_async
from forge.usage import UsageEvent
from forge.usage_metrics import UsageMetrics
from tests.unit.harness import in_process_gateway, platform_config


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict[Any, float], name: str, **labels: str) -> float:
    """The sum over samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in parsed.items() if n == name and want <= ls)


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def test_metrics_count_requests_tokens_and_cost_and_need_the_operator(gw):
    client = gw.sdk()
    for _ in range(3):
        await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
    stream = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    async for _ in stream:
        pass
    with pytest.raises(Exception):  # noqa: B017 (the SDK's 502 class varies by status)
        await client.chat.completions.create(
            model="error-500", messages=[{"role": "user", "content": "hi"}]
        )
    assert await gw.runtime.shipper.flush()

    refused = await gw.http.get("/metrics", headers={"Authorization": f"Bearer {gw.user_key}"})
    assert refused.status_code == 403 and "error" in refused.json()

    resp = await gw.http.get("/metrics", headers={"Authorization": f"Bearer {gw.operator_key}"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    m = samples(resp.text)
    assert value(m, "forge_requests_total", model="gpt-test", status="ok") == 4
    assert value(m, "forge_requests_total", model="gpt-test", stream="true") == 1
    assert value(m, "forge_requests_total", model="error-500", status="error") == 1
    assert value(m, "forge_tokens_total", model="gpt-test", kind="completion") > 0
    assert value(m, "forge_cost_usd_total", model="gpt-test") > 0
    assert value(m, "forge_request_duration_seconds_count", model="gpt-test") == 4
    assert value(m, "forge_time_to_first_token_seconds_count", model="gpt-test") == 1
    assert value(m, "forge_component_up", component="in-process") == 1
    assert value(m, "forge_breaker_open", target="gpt-test") == 0


async def test_an_open_breaker_shows_until_it_closes(gw):
    gw.runtime.breakers.cool_down("gpt-test", 30, "429 rate_limit_exceeded")
    headers = {"Authorization": f"Bearer {gw.operator_key}"}
    for _ in range(100):  # published in the background
        m = samples((await gw.http.get("/metrics", headers=headers)).text)
        if value(m, "forge_breaker_open", target="gpt-test") == 1:
            break
    assert value(m, "forge_breaker_open", target="gpt-test") == 1
    assert value(m, "forge_breaker_open_until_seconds", target="gpt-test") > 0


def _event(request_id: str) -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        created_at=datetime.now(UTC),
        key_id=None,
        endpoint="chat/completions",
        model="m",
        provider="p",
        provider_model="m",
        stream=False,
        prompt_tokens=3,
        completion_tokens=5,
        cost_usd=0.5,
        latency_ms=12.0,
        status="ok",
        http_status=200,
    )


async def test_a_batch_delivered_twice_is_counted_once(tmp_path):
    from forge.db.engine import make_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await upgrade_async(url)
    engine = make_engine(url)
    metrics = UsageMetrics()
    store = UsageStore(engine, observe=metrics.observe)
    try:
        batch = [_event("req_a"), _event("req_b")]
        assert await store.write(batch) == 2
        assert await store.write([*batch, _event("req_c")]) == 1  # a re-sent batch, and one more
        m = samples(metrics.exposition().decode())
        assert value(m, "forge_requests_total", model="m") == 3
        assert value(m, "forge_tokens_total", kind="completion") == 15
        assert value(m, "forge_cost_usd_total") == pytest.approx(1.5)
    finally:
        await engine.dispose()


def test_the_grafana_dashboard_queries_only_metrics_the_platform_exports(tmp_path):
    """cluster/grafana-dashboard.json: every metric a panel or variable names is one the
    platform exports (renamed metrics would leave panels silently empty)."""
    import json
    import re
    from pathlib import Path

    import gateway.metrics as gm

    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "cluster" / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [
        v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    named = {n for q in queries for n in re.findall(r"\bforge_[a-z_]+", q)}
    source = (root / "forge" / "usage_metrics.py").read_text() + Path(gm.__file__).read_text()
    exported = set(re.findall(r'"(forge_[a-z_]+)"', source))
    suffixed = {f"{n}{s}" for n in exported for s in ("", "_total", "_bucket", "_count", "_sum")}
    assert named and named <= suffixed, named - suffixed
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


async def test_the_platforms_own_refusals_are_counted_by_status_and_code(gw):
    """A 401 of the gateway's own leaves no usage record: the replica counts it, reports
    it with its state, and /metrics renders the replicas' counts."""
    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.errors import answered_errors
    from gateway.metrics import _replica_gauges

    before = answered_errors().get("401 invalid_api_key", 0)
    refused = await gw.http.post(
        "/v1/chat/completions",
        headers={"Authorization": "Bearer sk-not-a-key"},
        json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert refused.status_code == 401
    counts = answered_errors()
    assert counts["401 invalid_api_key"] == before + 1
    registry = CollectorRegistry()
    _replica_gauges(registry, {"gw-1": {"gateway": True, "errors": counts}})
    parsed = samples(generate_latest(registry).decode())
    assert (
        value(
            parsed,
            "forge_gateway_errors_total",
            status="401",
            code="invalid_api_key",
            replica="gw-1",
        )
        == before + 1
    )


def test_engines_kv_use_is_shown_when_they_say():
    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.metrics import _replica_gauges

    registry = CollectorRegistry()
    replicas = {
        "m-1": {"provider": "tiny", "running": 2, "waiting": 0, "kv_tokens": 130},
        "m-2": {"provider": "tiny", "running": 1, "waiting": 0, "kv_tokens": 40},
        "v-1": {"provider": "vllm", "running": 1, "waiting": 0, "kv_tokens": None},
    }
    replicas["m-1"]["kv_capacity_tokens"] = 2048
    _replica_gauges(registry, replicas)
    parsed = samples(generate_latest(registry).decode())
    assert value(parsed, "forge_engine_kv_tokens", provider="tiny") == 170
    assert value(parsed, "forge_engine_kv_capacity_tokens", replica="m-1") == 2048
    said = {dict(labels).get("provider") for name, labels in parsed if "kv_tokens" in name}
    assert said == {"tiny"}  # vLLM does not say: no sample rather than a false 0
