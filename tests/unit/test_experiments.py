"""A/B experiments: config checks, sticky assignment, the report's statistics against
scipy on the raw samples, and the whole loop through the in-process gateway (arm in the
usage record, feedback, the report route, the CLI)."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from scipy import stats
from sqlalchemy import insert, select
from typer.testing import CliRunner

from forge.config import Experiment, PlatformConfig
from forge.db.engine import make_sessionmaker
from forge.db.schema import UsageRecord
from forge.routing.experiments import arm_label, assign, report
from tests.unit.harness import in_process_gateway, platform_config, usage_rows

PROVIDERS = [{"name": "p", "type": "openai_compatible", "base_url": "http://x/v1"}]
MODELS = [{"name": "a", "provider": "p"}, {"name": "b", "provider": "p"}]


def experiment(**arms: float) -> Experiment:
    return Experiment(
        name="ab",
        arms=[{"name": n, "model": n, "percent": p} for n, p in arms.items()],  # type: ignore[misc]
    )


@pytest.mark.parametrize(
    ("experiments", "says"),
    [
        (
            [
                {
                    "name": "ab",
                    "arms": [
                        {"name": "x", "model": "a", "percent": 60},
                        {"name": "y", "model": "b", "percent": 30},
                    ],
                }
            ],
            "percents sum to 90, not 100",
        ),
        (
            [
                {
                    "name": "ab",
                    "arms": [
                        {"name": "x", "model": "a", "percent": 50},
                        {"name": "y", "model": "zz", "percent": 50},
                    ],
                }
            ],
            "arms[1].model names unknown",
        ),
        (
            [
                {
                    "name": "a",
                    "arms": [
                        {"name": "x", "model": "a", "percent": 50},
                        {"name": "y", "model": "b", "percent": 50},
                    ],
                }
            ],
            "routing.experiments[0].name 'a' is already taken",
        ),
        (
            [{"name": "ab", "arms": [{"name": "x", "model": "a", "percent": 100}]}],
            "routing.experiments.0.arms",
        ),
        (
            [
                {
                    "name": "ab",
                    "sticky": "ip",
                    "arms": [
                        {"name": "x", "model": "a", "percent": 50},
                        {"name": "y", "model": "b", "percent": 50},
                    ],
                }
            ],
            "routing.experiments.0.sticky",
        ),
    ],
)
def test_a_bad_experiment_is_refused_at_load(experiments, says):
    with pytest.raises(ValidationError) as err:
        PlatformConfig.model_validate(
            {"providers": PROVIDERS, "models": MODELS, "routing": {"experiments": experiments}}
        )
    assert says in str(err.value).replace("\n", " ")


def test_callers_keep_their_arm_and_spread_by_the_percents():
    exp = experiment(a=70, b=30)
    assert arm_label(exp, exp.arms[1]) == "ab/b"
    callers = [f"key_{i}" for i in range(20_000)]
    arms = [assign(exp, c).name for c in callers]
    assert arms == [assign(exp, c).name for c in callers]  # sticky
    share = Counter(arms)["a"] / len(callers)
    assert share == pytest.approx(0.70, abs=0.015)
    other = Experiment(name="other", arms=exp.arms)
    agree = sum(assign(other, c).name == a for c, a in zip(callers, arms, strict=True))
    assert agree / len(callers) < 0.65  # an independent split, not the same one


async def _rows(engine, label: str, latencies: list[float], errors: int, feedback: list[float]):
    rows = []
    for i, latency in enumerate(latencies):
        rows.append(
            {
                "request_id": "req_" + uuid.uuid4().hex,
                "created_at": datetime.now(UTC),
                "endpoint": "chat/completions",
                "model": label,
                "provider": "p",
                "provider_model": label,
                "stream": False,
                "prompt_tokens": 10,
                "completion_tokens": 10,
                "cost_usd": latency / 1e6,
                "latency_ms": latency,
                "status": "error" if i < errors else "ok",
                "http_status": 502 if i < errors else 200,
                "arm": f"ab/{label}",
                "feedback_score": feedback[i] if i < len(feedback) else None,
                # the judge scored every other answer, the worse the slower
                "quality_score": None if i % 2 else max(0.0, 1 - latency / 200),
            }
        )
    async with engine.begin() as conn:
        await conn.execute(insert(UsageRecord), rows)


async def test_the_report_matches_scipy_on_the_raw_samples(sqlite_engine):
    rng = random.Random(4)
    exp = experiment(a=40, b=30, c=30)
    lat = {
        "a": [rng.gauss(100, 15) for _ in range(300)],
        "b": [rng.gauss(130, 15) for _ in range(300)],
        "c": [rng.gauss(100, 15) for _ in range(300)],
    }
    feedback = {k: [rng.random() for _ in range(50)] for k in lat}
    await _rows(sqlite_engine, "a", lat["a"], 3, feedback["a"])
    await _rows(sqlite_engine, "b", lat["b"], 30, feedback["b"])
    await _rows(sqlite_engine, "c", lat["c"], 4, feedback["c"])
    result = await report(make_sessionmaker(sqlite_engine), exp, None)
    arms = {a.arm: a for a in result.arms}
    assert result.control == "a" and arms["a"].versus_control == {}
    assert arms["b"].requests == 300 and arms["b"].error_rate.mean == pytest.approx(0.1)

    for name in ("b", "c"):
        raw = stats.ttest_ind(lat["a"], lat[name], equal_var=False).pvalue
        assert arms[name].versus_control["latency_ms"].p_value == pytest.approx(raw, rel=1e-6)
    ci = stats.t.interval(0.95, 299, loc=stats.tmean(lat["b"]), scale=stats.sem(lat["b"]))
    assert (arms["b"].latency_ms.low, arms["b"].latency_ms.high) == pytest.approx(ci, rel=1e-9)
    assert arms["b"].versus_control["latency_ms"].significant  # 30 ms apart
    assert not arms["c"].versus_control["latency_ms"].significant  # the same distribution
    assert arms["b"].versus_control["error_rate"].significant  # 1% against 10%
    assert not arms["c"].versus_control["error_rate"].significant
    assert arms["a"].feedback.n == 50
    raw = stats.ttest_ind(feedback["a"], feedback["b"], equal_var=False).pvalue
    assert arms["b"].versus_control["feedback"].p_value == pytest.approx(raw, rel=1e-6)
    quality = {k: [max(0.0, 1 - x / 200) for x in v[::2]] for k, v in lat.items()}
    assert arms["b"].quality.n == 150
    assert arms["b"].quality.mean == pytest.approx(stats.tmean(quality["b"]))
    raw = stats.ttest_ind(quality["a"], quality["b"], equal_var=False).pvalue
    assert arms["b"].versus_control["quality"].p_value == pytest.approx(raw, rel=1e-6)
    assert arms["b"].versus_control["quality"].significant


def _config(base_url: str) -> PlatformConfig:
    config = platform_config(base_url)
    arms = [
        {"name": "x", "model": "gpt-test", "percent": 50},
        {"name": "y", "model": "gpt-inproc", "percent": 50},
    ]
    routing = config.routing.model_copy(
        update={"experiments": [Experiment(name="ab", arms=arms)]}  # type: ignore[list-item]
    )
    return config.model_copy(update={"routing": routing})


async def test_an_experiment_through_the_gateway_with_feedback_and_its_report(
    fake_openai, sqlite_engine
):
    async with in_process_gateway(_config(fake_openai.base_url), sqlite_engine) as gw:
        keys = [(await gw.keys.create_key(f"k{i}")).key for i in range(8)]
        seen: dict[str, set[str]] = {}
        request_ids = []
        for key in keys:
            for _ in range(3):
                raw = await gw.sdk(key).chat.completions.with_raw_response.create(
                    model="ab", messages=[{"role": "user", "content": "hi"}]
                )
                route = raw.headers["x-forge-route"]
                seen.setdefault(key, set()).add(route.rsplit("arm=", 1)[1])
                request_ids.append((key, raw.headers["x-request-id"]))
        assert all(len(arms) == 1 for arms in seen.values())  # sticky per key
        assert {a for arms in seen.values() for a in arms} == {"ab/x", "ab/y"}

        key, request_id = request_ids[0]
        good = await gw.http.post(
            "/v1/feedback",
            json={"request_id": request_id, "score": 0.9},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert good.status_code == 200, good.text
        for body in ({"request_id": request_id, "score": 1.5}, {"request_id": "nope", "score": 1}):
            bad = await gw.http.post(
                "/v1/feedback", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            assert bad.status_code in (400, 404), bad.text
        rows = await usage_rows(gw)
        mine = next(r for r in rows if r["request_id"] == request_id)
        assert mine["feedback_score"] == 0.9 and mine["arm"] in ("ab/x", "ab/y")
        target = {"ab/x": "gpt-test", "ab/y": "gpt-inproc"}[mine["arm"]]
        assert f"target={target}" in mine["route"] and f"arm={mine['arm']}" in mine["route"]

        ops = {"Authorization": f"Bearer {gw.operator_key}"}
        rep = await gw.http.get("/admin/experiments/ab/report", headers=ops)
        assert rep.status_code == 200, rep.text
        arms = {a["arm"]: a for a in rep.json()["arms"]}
        assert arms["x"]["requests"] + arms["y"]["requests"] == 24
        assert (await gw.http.get("/admin/experiments/none/report", headers=ops)).status_code == 404
        refused = await gw.http.get(
            "/admin/experiments", headers={"Authorization": f"Bearer {gw.admin_key}"}
        )
        assert refused.status_code == 403
        assert "ab" in {m.id async for m in gw.sdk().models.list()}


def test_the_cli_reports_an_experiment(tmp_path, monkeypatch):
    import asyncio

    import yaml

    from forge.cli import app
    from forge.db.engine import make_engine
    from forge.db.migrate import upgrade

    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "providers": PROVIDERS,
                "models": MODELS,
                "routing": {
                    "experiments": [
                        {
                            "name": "ab",
                            "arms": [
                                {"name": "a", "model": "a", "percent": 50},
                                {"name": "b", "model": "b", "percent": 50},
                            ],
                        }
                    ]
                },
            }
        )
    )
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    url = f"sqlite+aiosqlite:///{tmp_path / 'forge.db'}"
    upgrade(url)

    async def fill() -> None:
        engine = make_engine(url)
        await _rows(engine, "a", [100.0, 110.0, 90.0], 0, [1.0])
        await _rows(engine, "b", [200.0, 210.0, 190.0], 1, [])
        async with engine.connect() as conn:
            assert len((await conn.execute(select(UsageRecord))).all()) == 6
        await engine.dispose()

    asyncio.run(fill())
    runner = CliRunner()
    out = runner.invoke(app, ["experiments", "report", "ab", "--config", str(config)])
    assert out.exit_code == 0, out.output
    assert "ab (control: a)" in out.output and "latency_ms*" in out.output
    as_json = runner.invoke(app, ["experiments", "report", "ab", "--config", str(config), "--json"])
    assert '"requests": 3' in as_json.output
    missing = runner.invoke(app, ["experiments", "report", "zz", "--config", str(config)])
    assert missing.exit_code != 0
