"""Spend alerts (OpenAI's ``/spend_alerts`` of an organisation and of a project): kept
and checked against OpenAI's schemas; fired by the usage recorder once per alert and
month when the month's spend reaches the threshold, on SQLite and PostgreSQL, however
often a batch arrives; read back by admins from the outbox."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from actors.usage_recorder import UsageStore
from forge.db.engine import make_sessionmaker
from forge.db.schema import SpendAlert, SpendAlertEvent
from tests.unit.harness import in_process_gateway, platform_config
from tests.unit.test_spend import event
from tests.unit.test_tenancy import call, conforms, populated

WHEN = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CHANNEL = {"type": "email", "recipients": ["ops@example.com"]}


def alert_row(alert_id: str, scope: str, subject: str, cents: int) -> dict:
    return {
        "id": alert_id,
        "org_id": "org-s",
        "scope": scope,
        "subject_id": subject,
        "threshold_cents": cents,
        "currency": "USD",
        "interval": "month",
        "channel": '{"type": "email", "recipients": ["a@b.co"]}',
        "created_at": WHEN,
    }


async def fired(engine) -> dict[str, tuple[str, float]]:
    async with make_sessionmaker(engine)() as s:
        rows = await s.scalars(select(SpendAlertEvent))
        return {r.alert_id: (r.period_start, round(r.spent_usd, 6)) for r in rows}


async def test_an_alert_fires_once_a_month_when_the_spend_reaches_it(engine):
    async with engine.begin() as conn:
        await conn.execute(
            insert(SpendAlert),
            [
                alert_row("alert_project", "project", "proj_s", 100),  # $1.00
                alert_row("alert_org", "organization", "org-s", 50),
                alert_row("alert_other", "project", "proj_other", 0),
            ],
        )
    store = UsageStore(engine)
    await store.write([event(1, WHEN, cost=0.60)])
    assert await fired(engine) == {"alert_org": ("2026-12-01", 0.6)}
    batch = [event(2, WHEN, cost=0.50), event(3, WHEN, cost=0.50)]
    await store.write(batch)
    await store.write(batch)  # delivered twice: counted once, fired once
    assert await fired(engine) == {
        "alert_org": ("2026-12-01", 0.6),
        "alert_project": ("2026-12-01", 1.6),
    }
    # next month, the month's spend starts again
    await store.write([event(4, datetime(2027, 1, 2, tzinfo=UTC), cost=0.55)])
    async with make_sessionmaker(engine)() as s:
        months = {(r.alert_id, r.period_start) for r in await s.scalars(select(SpendAlertEvent))}
    assert ("alert_org", "2027-01-01") in months and ("alert_project", "2027-01-01") not in months


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def test_spend_alerts_through_the_admin_api(gw):
    org = await populated(gw, "alerts")
    other = await populated(gw, "alerts-other")
    body = {
        "threshold_amount": 0,
        "currency": "USD",
        "interval": "month",
        "notification_channel": CHANNEL,
    }
    for base, schema in (
        ("/v1/organization/spend_alerts", "OrganizationSpendAlert"),
        (f"/v1/organization/projects/{org.project}/spend_alerts", "ProjectSpendAlert"),
    ):
        made = conforms(schema, await call(gw, "POST", base, org.admin, json=body))
        listed = conforms(f"{schema}ListResource", await call(gw, "GET", base, org.admin))
        assert [a["id"] for a in listed["data"]] == [made["id"]]
        changed = {**body, "threshold_amount": 1}
        updated = await call(gw, "POST", f"{base}/{made['id']}", org.admin, json=changed)
        assert conforms(schema, updated)["threshold_amount"] == 1
        conforms(schema, await call(gw, "GET", f"{base}/{made['id']}", org.admin))
        theirs = await call(gw, "GET", f"{base}/{made['id']}", other.admin)
        assert theirs.status_code == 404
        deleted = await call(gw, "DELETE", f"{base}/{made['id']}", org.admin)
        conforms(f"{schema}DeletedResource", deleted)
    for bad, param in (
        ({**body, "threshold_amount": -1}, "threshold_amount"),
        ({**body, "currency": "EUR"}, "currency"),
        ({**body, "interval": "day"}, "interval"),
        ({**body, "notification_channel": {"type": "email", "recipients": []}}, None),
    ):
        resp = await call(gw, "POST", "/v1/organization/spend_alerts", org.admin, json=bad)
        assert resp.status_code == 400, resp.text
        if param:
            assert resp.json()["error"]["param"] == param

    # an alert at zero fires with the project's next request; its admin reads it back
    base = f"/v1/organization/projects/{org.project}/spend_alerts"
    alert = (await call(gw, "POST", base, org.admin, json=body)).json()
    reply = await gw.sdk(org.user).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices
    await gw.runtime.shipper.flush()
    events = (await call(gw, "GET", "/admin/budgets/alert_events", org.admin)).json()
    assert [e["alert_id"] for e in events] == [alert["id"]]
    assert events[0]["subject_id"] == org.project and events[0]["delivered_at"] is None
    assert (await call(gw, "GET", "/admin/budgets/alert_events", other.admin)).json() == []
