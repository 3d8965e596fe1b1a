"""Usage analytics (forge.analytics, ``GET /v1/organization/usage/analytics``) over real
usage records: groups, nearest-rank percentiles, error rates, the same on SQLite and
PostgreSQL; CSV that parses; bad queries are 400s in OpenAI's error shape naming the
parameter; another organisation's records never count."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from actors.usage_recorder import UsageStore
from forge.analytics import percentile, usage_analytics
from forge.db.engine import make_sessionmaker
from forge.errors import InvalidRequest
from forge.usage import UsageEvent
from tests.unit.harness import in_process_gateway, platform_config
from tests.unit.test_tenancy import call, new_org

DAY1 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
START = int(DAY1.timestamp()) - 3_600
END = int(DAY2.timestamp()) + 3_600
PATH = "/v1/organization/usage/analytics"


def event(
    i: int,
    org: str,
    when: datetime = DAY1,
    *,
    provider: str = "openai",
    model: str = "gpt-a",
    project: str = "proj_1",
    latency: float = 100.0,
    ttft: float | None = None,
    status: str = "ok",
) -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{org}-{i}",
        created_at=when,
        key_id="key_a",
        org_id=org,
        project_id=project,
        endpoint="chat/completions",
        model=model,
        provider=provider,
        provider_model=model,
        stream=ttft is not None,
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=0.5,
        latency_ms=latency,
        ttft_ms=ttft,
        status=status,  # type: ignore[arg-type]
        http_status=200 if status == "ok" else 502,
    )


def records(org: str) -> list[UsageEvent]:
    """org's: openai/gpt-a on day 1, latencies 1..100 ms (every 10th an error, 50 with a
    TTFT of i/10), 4 anthropic/claude on day 2 in proj_2 (one client hang-up); and 3
    of another organisation in the same project, far slower."""
    made = [
        event(
            i,
            org,
            latency=float(i),
            ttft=i / 10 if i % 2 == 0 else None,
            status="error" if i % 10 == 0 else "ok",
        )
        for i in range(1, 101)
    ]
    made += [
        event(
            200 + i,
            org,
            DAY2,
            provider="anthropic",
            model="claude",
            project="proj_2",
            latency=float(1_000 * (i + 1)),
            status="client_disconnected" if i == 0 else "ok",
        )
        for i in range(4)
    ]
    made += [event(300 + i, f"{org}-other", latency=9_999.0, status="error") for i in range(3)]
    return made


async def test_groups_percentiles_and_error_rates_on_each_backend(engine):
    await UsageStore(engine).write(records("org-an"))
    sessions = make_sessionmaker(engine)
    [total] = await usage_analytics(sessions, "org-an", start_time=START, end_time=END)
    assert (total.requests, total.errors) == (104, 10)  # a hang-up is not an error
    assert total.error_rate == pytest.approx(10 / 104, abs=1e-6)
    assert (total.input_tokens, total.output_tokens) == (1_040, 520)
    assert total.cost_usd == pytest.approx(52.0)
    assert total.provider is None and total.day is None
    # nearest rank over 1..100 and 1000..4000: the 52nd and the 99th of 104
    assert (total.latency_p50_ms, total.latency_p95_ms) == (52.0, 99.0)

    rows = await usage_analytics(
        sessions,
        "org-an",
        start_time=START,
        end_time=END,
        group_by=["provider,day", "model"],
    )
    got = {(r.provider, r.day, r.model): r for r in rows}
    assert list(got) == [
        ("anthropic", "2026-03-02", "claude"),
        ("openai", "2026-03-01", "gpt-a"),
    ]
    openai = got["openai", "2026-03-01", "gpt-a"]
    assert (openai.requests, openai.errors, openai.error_rate) == (100, 10, 0.1)
    assert (openai.latency_p50_ms, openai.latency_p95_ms) == (50.0, 95.0)
    # TTFTs 0.2, 0.4 ... 10.0: the 25th and the 48th
    assert (openai.ttft_p50_ms, openai.ttft_p95_ms) == (5.0, 9.6)
    assert openai.project_id is None  # not grouped by
    claude = got["anthropic", "2026-03-02", "claude"]
    assert (claude.requests, claude.errors, claude.error_rate) == (4, 0, 0.0)
    assert (claude.latency_p50_ms, claude.latency_p95_ms) == (2_000.0, 4_000.0)
    assert claude.ttft_p50_ms is None and claude.ttft_p95_ms is None

    by_project = await usage_analytics(
        sessions,
        "org-an",
        start_time=START,
        end_time=END,
        group_by=["project"],
        project_ids=["proj_1"],
    )
    assert [(r.project_id, r.requests) for r in by_project] == [("proj_1", 100)]
    # the other organisation's slow failures in the same project never count
    assert max(r.latency_p95_ms or 0 for r in rows) < 9_999
    theirs = await usage_analytics(sessions, "org-an-other", start_time=START, end_time=END)
    assert [(r.requests, r.errors) for r in theirs] == [(3, 3)]
    # the range is [start, end): day 2 alone
    [day2] = await usage_analytics(
        sessions, "org-an", start_time=int(DAY2.timestamp()), end_time=END
    )
    assert day2.requests == 4
    assert await usage_analytics(sessions, "nobody", start_time=START, end_time=END) == []


def test_nearest_rank_percentiles():
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 50) == 20.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 95) == 40.0
    assert percentile([float(i) for i in range(1, 21)], 95) == 19.0


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"start_time": START, "end_time": START + 367 * 86_400}, "end_time"),
        ({"start_time": START, "end_time": START}, "end_time"),
        ({"start_time": -1}, "start_time"),
        ({"start_time": START, "group_by": ["colour"]}, "group_by"),
    ],
)
async def test_bad_queries_name_the_parameter(sqlite_engine, kwargs, param):
    with pytest.raises(InvalidRequest) as raised:
        await usage_analytics(make_sessionmaker(sqlite_engine), "org", **kwargs)
    assert raised.value.param == param and raised.value.status_code == 400


async def test_the_default_end_is_now_and_caps_the_range(sqlite_engine):
    sessions = make_sessionmaker(sqlite_engine)
    now = START + 400 * 86_400
    with pytest.raises(InvalidRequest) as raised:
        await usage_analytics(sessions, "org", start_time=START, now=now)
    assert raised.value.param == "start_time" and "366" in raised.value.message
    assert await usage_analytics(sessions, "org", start_time=now - 86_400, now=now) == []


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def test_the_route_in_json_and_csv_for_its_organisation_only(gw):
    org = await new_org(gw, "analytics")
    other = await new_org(gw, "analytics-other")
    made = [e.model_copy(update={"org_id": org.id}) for e in records("x") if e.org_id == "x"]
    made += [e.model_copy(update={"org_id": other.id}) for e in records("y")[-3:]]
    await UsageStore(gw.engine).write(made)
    params = {"start_time": START, "end_time": END, "group_by": ["provider", "day"]}
    resp = await call(gw, "GET", PATH, org.admin, params=params)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list"
    rows = {(r["provider"], r["day"]): r for r in body["data"]}
    assert set(rows) == {("openai", "2026-03-01"), ("anthropic", "2026-03-02")}
    openai = rows["openai", "2026-03-01"]
    assert openai["object"] == "organization.usage.analytics.result"
    assert (openai["requests"], openai["errors"], openai["error_rate"]) == (100, 10, 0.1)
    assert (openai["latency_p50_ms"], openai["latency_p95_ms"]) == (50.0, 95.0)
    assert openai["model"] is None and openai["project_id"] is None

    resp = await call(
        gw,
        "GET",
        PATH,
        org.admin,
        params={"start_time": START, "end_time": END, "group_by": "model,project", "format": "csv"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(resp.text)))
    assert list(parsed[0])[:3] == ["model", "project_id", "requests"]
    assert [(r["model"], r["project_id"], r["requests"]) for r in parsed] == [
        ("claude", "proj_2", "4"),
        ("gpt-a", "proj_1", "100"),
    ]
    assert parsed[0]["ttft_p50_ms"] == "" and parsed[1]["ttft_p95_ms"] == "9.6"
    assert float(parsed[1]["latency_p95_ms"]) == 95.0

    filtered = await call(
        gw,
        "GET",
        PATH,
        org.admin,
        params={"start_time": START, "end_time": END, "project_ids": ["proj_2"]},
    )
    [only] = filtered.json()["data"]
    assert only["requests"] == 4

    theirs = (
        await call(gw, "GET", PATH, other.admin, params={"start_time": START, "end_time": END})
    ).json()["data"]
    assert [(r["requests"], r["errors"]) for r in theirs] == [(3, 3)]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({}, "start_time"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": START, "group_by": ["model", "colour"]}, "group_by"),
        ({"start_time": START, "group_by": "day,user"}, "group_by"),
        ({"start_time": START, "end_time": START + 400 * 86_400}, "end_time"),
        ({"start_time": START, "end_time": START - 1}, "end_time"),
        ({"start_time": START, "end_time": END, "format": "xml"}, "format"),
    ],
)
async def test_bad_route_queries_are_openai_errors_naming_the_parameter(gw, params, param):
    org = await new_org(gw, f"analytics-bad-{param}-{len(params)}")
    resp = await call(gw, "GET", PATH, org.admin, params=params)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]
