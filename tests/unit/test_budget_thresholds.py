"""Budget thresholds (SQLite and PostgreSQL): a budget's period reaching 80% and then
100% of its limit becomes one outbox row each, in the usage recorder's transaction,
however often a batch is delivered; the webhook senders turn each into one
``budget.threshold_reached`` event, rendered for people in the chat tools' formats."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from actors.usage_recorder import UsageStore
from forge.credentials.sealing import Keyring
from forge.db.engine import make_sessionmaker
from forge.db.schema import BudgetRow, BudgetThresholdEvent, WebhookDelivery
from forge.webhooks.events import Event
from forge.webhooks.formats import render, summary
from forge.webhooks.store import WebhookCreate, WebhookStore
from tests.unit.harness import TEST_KEYRING
from tests.unit.test_spend import event

WHEN = datetime(2026, 12, 3, 12, tzinfo=UTC)


async def _budget(engine, unit: str, limit: float, scope: str = "key", subject: str = "key_a"):
    async with make_sessionmaker(engine).begin() as s:
        s.add(
            BudgetRow(
                id=f"budget_{unit}_{scope}",
                org_id="org-s",
                scope=scope,
                subject_id=subject,
                period="day",
                unit=unit,
                limit=limit,
            )
        )


async def _reached(engine) -> list[tuple[str, int, float]]:
    async with make_sessionmaker(engine)() as s:
        rows = (await s.scalars(select(BudgetThresholdEvent))).all()
    return sorted((r.budget_id, r.percent, round(r.used, 6)) for r in rows)


async def test_80_then_100_percent_each_once(engine):
    await _budget(engine, "usd", 1.0)
    await _budget(engine, "requests", 10, scope="project", subject="proj_s")
    store = UsageStore(engine)
    await store.write([event(0, WHEN, cost=0.5)])
    assert await _reached(engine) == []  # 50%
    second = [event(1, WHEN, cost=0.35)]
    await store.write(second)
    await store.write(second)  # delivered twice: counted once, fired once
    assert await _reached(engine) == [("budget_usd_key", 80, 0.85)]
    await store.write([event(i, WHEN, cost=0.03) for i in range(2, 8)])  # 8 requests, $1.03
    assert await _reached(engine) == [
        ("budget_requests_project", 80, 8.0),
        ("budget_usd_key", 80, 0.85),
        ("budget_usd_key", 100, 1.03),
    ]
    await store.write([event(9, WHEN, cost=0.01, key="key_b")])  # another key, same project
    assert ("budget_requests_project", 100, 9.0) not in await _reached(engine)  # 9 of 10


async def test_each_threshold_becomes_one_event_for_its_organisation(engine):
    await _budget(engine, "usd", 1.0)
    await UsageStore(engine).write([event(0, WHEN, cost=1.2)])
    sessions = make_sessionmaker(engine)
    hooks = WebhookStore(sessions, Keyring.parse(TEST_KEYRING))
    await hooks.create(
        "org-s", WebhookCreate(url="http://127.0.0.1:9/x", events=["budget.threshold_reached"])
    )
    assert await hooks.collect_budget_thresholds() == 2  # 80% and 100%, one delivery each
    assert await hooks.collect_budget_thresholds() == 0  # taken from the outbox once
    async with sessions() as s:
        deliveries = (await s.scalars(select(WebhookDelivery))).all()
    percents = sorted(Event.model_validate_json(d.payload).data["percent"] for d in deliveries)
    assert percents == [80, 100] and {d.org_id for d in deliveries} == {"org-s"}


def test_the_event_reads_well_in_every_format():
    data = {
        "budget_id": "budget_x",
        "scope": "project",
        "subject_id": "proj_s",
        "period": "month",
        "period_start": "2026-12-01",
        "unit": "usd",
        "limit": 100.0,
        "used": 81.5,
        "percent": 80,
    }
    reached = Event(type="budget.threshold_reached", timestamp=WHEN, data=data)
    assert summary(reached) == (
        "project proj_s used $81.50 of $100.00 this month: 80% of its budget."
    )
    tokens = reached.model_copy(
        update={"data": {**data, "unit": "tokens", "used": 1e6, "limit": 1e6}}
    )
    assert "1,000,000 of 1,000,000 tokens" in summary(tokens)
    assert render("discord", reached)["embeds"][0]["color"] == 0xD93F0B  # a warning
    assert render("slack", reached)["blocks"][0]["text"]["text"] == "Budget threshold reached"
