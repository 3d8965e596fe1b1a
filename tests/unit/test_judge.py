"""The judge model: its request and score parsing, scores written once the judged
record exists, and through the gateway with the official SDK (the fake OpenAI upstream
answers the judge's JSON schema, as Structured Outputs do): the score on the judged
request's record, the judge's own call as a record of its own, shown per arm and per
model; a failing judge never disturbs the answer."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from actors.usage_recorder import UsageStore
from forge.analytics import usage_analytics
from forge.config import JudgeConfig, PlatformConfig, QualityConfig
from forge.db.engine import make_sessionmaker
from forge.quality.judge import SCORE_FORMAT, Judge, QualityScores, judge_body, parse_score
from forge.usage import UsageEvent
from tests.unit.harness import in_process_gateway, platform_config, usage_rows

MSG = [{"role": "user", "content": "what is 2 + 2?"}]


def _reply(content):
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


@pytest.mark.parametrize(
    ("content", "score"),
    [
        ('{"score": 0.8, "reason": "right"}', 0.8),
        ('{"score": 1, "reason": "exact"}', 1.0),
        ('{"score": 1.5, "reason": "too high"}', None),
        ('{"score": true, "reason": "a bool"}', None),
        ('{"reason": "no score"}', None),
        ("not json", None),
        (None, None),
    ],
)
def test_parse_score(content, score):
    assert parse_score(_reply(content)) == score


def test_the_judges_request_holds_rubric_conversation_and_bounded_answer():
    config = JudgeConfig(model="m", sample_rate=1, rubric="Be strict.", max_answer_chars=100)
    body = judge_body(config, {"messages": MSG}, "4" + "!" * 500)
    system, user = body["messages"]
    assert "Be strict." in system["content"]
    assert "2 + 2" in user["content"] and user["content"].endswith("4" + "!" * 99)
    assert body["response_format"] == SCORE_FORMAT and body["temperature"] == 0


def test_the_sample_decides():
    judge = Judge(JudgeConfig(model="m", sample_rate=0.25), None, sample=iter([0.1, 0.3]).__next__)
    assert judge.picks() and not judge.picks()


def _event(request_id: str) -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        created_at=datetime.now(UTC),
        key_id=None,
        org_id="org_j",
        endpoint="chat/completions",
        model="m",
        provider="p",
        provider_model="m",
        stream=False,
        prompt_tokens=1,
        completion_tokens=1,
        cost_usd=0.0,
        latency_ms=1.0,
        status="ok",
        http_status=200,
    )


async def test_a_score_waits_for_its_record(sqlite_engine):
    """The judge may finish before the shipper has sent the judged record."""
    scores = QualityScores(make_sessionmaker(sqlite_engine))
    judge = Judge(JudgeConfig(model="m", sample_rate=1), scores, write_delays_s=(0.05,) * 200)

    async def ask(body):
        return _reply('{"score": 0.75, "reason": "ok"}')

    judging = asyncio.create_task(judge.judge("req_late", {"messages": MSG}, "4", ask))
    await asyncio.sleep(0.12)
    await UsageStore(sqlite_engine).write([_event("req_late")])
    assert await judging == 0.75
    async with sqlite_engine.connect() as conn:
        (score,) = (
            await conn.exec_driver_sql(
                "select quality_score from usage_records where request_id = 'req_late'"
            )
        ).one()
    assert score == 0.75


async def test_a_failed_judge_call_scores_nothing(sqlite_engine):
    judge = Judge(
        JudgeConfig(model="m", sample_rate=1), QualityScores(make_sessionmaker(sqlite_engine))
    )

    async def ask(body):
        return None

    assert await judge.judge("req_x", {"messages": MSG}, "4", ask) is None


def test_an_unknown_judge_model_is_refused_at_load(fake_openai):
    config = platform_config(fake_openai.base_url).model_dump()
    config["quality"] = {"judge": {"model": "no-such-model", "sample_rate": 0.5}}
    with pytest.raises(
        ValueError, match=r"quality\.judge\.model names unknown model 'no-such-model'"
    ):
        PlatformConfig.model_validate(config)


def _judged(base_url: str, judge_model: str) -> PlatformConfig:
    config = platform_config(base_url)
    judging = QualityConfig(judge=JudgeConfig(model=judge_model, sample_rate=1.0))
    return config.model_copy(update={"quality": judging})


async def _settled(gw) -> None:
    judge = gw.runtime.relay.judge
    judge.write_delays_s = (0.02,) * 50
    await gw.runtime.shipper.flush()
    await asyncio.gather(*judge.tasks)


async def test_through_the_gateway_the_answer_is_scored_and_the_judge_recorded(
    fake_openai, sqlite_engine
):
    async with in_process_gateway(_judged(fake_openai.base_url, "gpt-test"), sqlite_engine) as gw:
        raw = await gw.sdk().chat.completions.with_raw_response.create(
            model="gpt-test", messages=MSG
        )
        answer = raw.parse().choices[0].message.content
        await _settled(gw)
        judged_request = fake_openai.requests[-1]["body"]
        rows = {r["request_id"]: r for r in await usage_rows(gw)}
    request_id = raw.headers["x-request-id"]
    assert judged_request["response_format"] == SCORE_FORMAT
    assert answer in judged_request["messages"][1]["content"]
    assert rows[request_id]["quality_score"] == 0.5  # the fake's middle of [0, 1]
    judge_row = rows[f"{request_id}.judge"]
    assert judge_row["model"] == "gpt-test" and judge_row["status"] == "ok"
    assert judge_row["org_id"] == rows[request_id]["org_id"]
    assert judge_row["quality_score"] is None and judge_row["completion_tokens"] > 0


async def test_streams_and_invalid_answers_are_not_judged(fake_openai, sqlite_engine):
    async with in_process_gateway(_judged(fake_openai.base_url, "gpt-test"), sqlite_engine) as gw:
        stream = await gw.sdk().chat.completions.create(model="gpt-test", messages=MSG, stream=True)
        async for _ in stream:
            pass
        await gw.sdk().chat.completions.create(
            model="sloppy-json", messages=MSG, response_format={"type": "json_object"}
        )
        assert not gw.runtime.relay.judge.tasks
        rows = await usage_rows(gw)
    assert len(rows) == 2 and all(r["quality_score"] is None for r in rows)


async def test_a_failing_judge_leaves_the_answer_alone(fake_openai, sqlite_engine):
    async with in_process_gateway(_judged(fake_openai.base_url, "error-500"), sqlite_engine) as gw:
        completion = await gw.sdk().chat.completions.create(model="gpt-test", messages=MSG)
        await _settled(gw)
        rows = await usage_rows(gw)
    assert completion.choices[0].message.content
    statuses = sorted((r["request_id"].endswith(".judge"), r["status"]) for r in rows)
    assert statuses == [(False, "ok"), (True, "error")]
    assert all(r["quality_score"] is None for r in rows)


async def test_scores_and_validation_in_the_analytics(sqlite_engine):
    store = UsageStore(sqlite_engine)
    events = [
        _event("a").model_copy(update={"validation": "ok"}),
        _event("b").model_copy(update={"validation": "invalid_json"}),
        _event("c").model_copy(update={"validation": "corrected"}),
        _event("d"),
    ]
    await store.write(events)
    scores = QualityScores(make_sessionmaker(sqlite_engine))
    assert await scores.record("a", 0.5) and await scores.record("c", 1.0)
    assert not await scores.record("missing", 1.0)
    now = int(datetime.now(UTC).timestamp())
    (row,) = await usage_analytics(make_sessionmaker(sqlite_engine), "org_j", start_time=now - 60)
    assert (row.invalid_answers, row.quality_scored, row.quality_mean) == (1, 2, 0.75)
    assert json.loads(row.model_dump_json())["quality_mean"] == 0.75
