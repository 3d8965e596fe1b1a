"""Webhooks end to end in the in-process gateway: endpoints made through the Admin API,
events from the outbox to fake receivers that check what each real one checks
(signatures with the Standard Webhooks reference library; Slack's, Discord's and
Teams' message formats), retries, failures, replays, and URLs that are refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from forge.config import WebhooksConfig
from forge.db.schema import DEFAULT_ORG_ID, SpendAlertEvent, WebhookDelivery
from forge.webhooks.events import Event
from forge.webhooks.signing import new_secret, signed_headers
from forge.webhooks.targets import check_url
from tests.fakes.webhook_receivers import FakeReceivers
from tests.unit.harness import in_process_gateway, platform_config

FAST = WebhooksConfig(poll_interval_s=0.05, timeout_s=2, retry_schedule_s=[0.05, 0.05])


@pytest.fixture(scope="module")
def receivers():
    fake = FakeReceivers().start()
    yield fake
    fake.stop()


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    config = platform_config(fake_openai.base_url).model_copy(update={"webhooks": FAST})
    async with in_process_gateway(config, sqlite_engine) as h:
        yield h


def admin(gw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.admin_key}"}


async def create(gw: Any, url: str, events: list[str], kind: str = "standard") -> dict:
    resp = await gw.http.post(
        "/v1/organization/webhooks",
        json={"url": url, "kind": kind, "events": events},
        headers=admin(gw),
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def eventually(check, timeout_s: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        got = await check()
        if got or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.02)


def test_signatures_verify_with_the_reference_library():
    secret = new_secret()
    body = b'{"type":"webhook.test"}'
    headers = signed_headers(secret, "msg_1", int(datetime.now(UTC).timestamp()), body)
    assert Webhook(secret).verify(body, headers) == {"type": "webhook.test"}
    with pytest.raises(Exception):  # noqa: B017
        Webhook(new_secret()).verify(body, headers)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "http:///nohost",
        "https://user:pw@example.com/hook",
        "http://127.0.0.1:8000/v1/chat/completions",
        "http://localhost:8000/admin/keys",
        "http://[::1]:8000/x",
        "http://[::ffff:127.0.0.1]:8000/x",
        "http://a..b:8000/",
        "http://" + "a" * 300 + ".com:8000/",
        "not a url",
    ],
)
async def test_urls_that_are_not_http_or_point_at_the_platform_are_refused(url):
    from forge.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as err:
        await check_url(url, "127.0.0.1", 8000)
    assert err.value.param == "url"


async def test_other_ports_and_hosts_are_fine():
    assert await check_url("http://127.0.0.1:9999/hook", "127.0.0.1", 8000)
    assert await check_url("https://hooks.slack.com/services/T/B/X", "127.0.0.1", 8000)


async def test_an_endpoint_hears_its_events_signed_and_its_secret_shows_once(gw, receivers):
    made = await create(gw, receivers.url + "/standard/a", ["api_key.created", "webhook.test"])
    assert made["secret"].startswith("whsec_") and made["url"] == "http://127.0.0.1"
    receivers.secrets["a"] = made["secret"]
    got = await gw.http.get(f"/v1/organization/webhooks/{made['id']}", headers=admin(gw))
    assert got.status_code == 200 and "secret" not in got.json()

    test = await gw.http.post(f"/v1/organization/webhooks/{made['id']}/test", headers=admin(gw))
    assert test.status_code == 200 and test.json()["status"] == "pending"
    # an audited action that is an event: a key made through the Admin API
    key = await gw.http.post(
        "/v1/organization/admin_api_keys", json={"name": "ops"}, headers=admin(gw)
    )
    assert key.status_code == 200, key.text

    async def two() -> list:
        return (
            receivers.received.get("standard/a", [])
            if len(receivers.received.get("standard/a", [])) >= 2
            else []
        )

    seen = await eventually(two)
    types = sorted(r["body"]["type"] for r in seen)
    assert types == ["api_key.created", "webhook.test"]
    created = next(r for r in seen if r["body"]["type"] == "api_key.created")
    assert created["body"]["data"]["id"] == key.json()["id"]
    assert created["headers"]["webhook-id"].startswith("msg_")
    assert key.json()["value"] not in str(seen)  # the key itself is never in an event

    listed = await gw.http.get(
        f"/v1/organization/webhooks/{made['id']}/deliveries", headers=admin(gw)
    )
    rows = listed.json()["data"]
    assert {r["status"] for r in rows} == {"delivered"} and len(rows) == 2


async def test_spend_alerts_reach_slack_discord_and_teams_in_their_formats(gw, receivers):
    for kind in ("slack", "discord", "teams"):
        await create(gw, f"{receivers.url}/{kind}", ["spend_alert.fired"], kind=kind)
    async with gw.engine.begin() as conn:  # as the usage recorder fires one
        await conn.execute(
            SpendAlertEvent.__table__.insert().values(
                alert_id="spend_alert_x",
                period_start="2026-12-01",
                org_id=DEFAULT_ORG_ID,
                scope="project",
                subject_id="proj_default",
                threshold_cents=5000,
                spent_usd=51.25,
                created_at=datetime.now(UTC),
            )
        )

    async def all_three() -> bool:
        return all(receivers.received.get(k) for k in ("slack", "discord", "teams"))

    assert await eventually(all_three)
    slack = receivers.received["slack"][-1]["body"]
    assert "$51.25" in slack["text"] and slack["blocks"][0]["type"] == "header"
    discord = receivers.received["discord"][-1]["body"]
    assert discord["embeds"][0]["title"] == "Spend alert"
    teams = receivers.received["teams"][-1]["body"]
    assert teams["attachments"][0]["content"]["type"] == "AdaptiveCard"
    async with gw.engine.connect() as conn:
        outbox = (await conn.execute(select(SpendAlertEvent))).mappings().one()
    assert outbox["delivered_at"] is not None  # taken from the outbox once


async def test_failed_tries_retry_then_fail_and_a_replay_sends_again(gw, receivers):
    flaky = await create(gw, receivers.url + "/fail/2", ["webhook.test"], kind="slack")
    down = await create(gw, receivers.url + "/down", ["webhook.test"], kind="slack")
    for endpoint in (flaky, down):
        await gw.http.post(f"/v1/organization/webhooks/{endpoint['id']}/test", headers=admin(gw))

    async def settled(endpoint_id: str, status: str) -> list:
        resp = await gw.http.get(
            f"/v1/organization/webhooks/{endpoint_id}/deliveries", headers=admin(gw)
        )
        rows = resp.json()["data"]
        return rows if rows and rows[0]["status"] == status else []

    (ok,) = await eventually(lambda: settled(flaky["id"], "delivered"))
    assert ok["attempts"] == 3 and ok["last_status_code"] == 200
    (failed,) = await eventually(lambda: settled(down["id"], "failed"))
    assert failed["attempts"] == 3 and failed["last_status_code"] == 503
    assert "HTTP 503" in failed["last_error"]

    replay = await gw.http.post(
        f"/v1/organization/webhooks/{down['id']}/deliveries/{failed['id']}/replay",
        headers=admin(gw),
    )
    assert replay.json()["status"] == "pending"
    (again,) = await eventually(lambda: settled(down["id"], "failed"))
    assert again["attempts"] == 4  # one more try; the schedule is spent


async def test_a_claim_whose_sender_died_is_taken_over(gw, receivers):
    store = gw.runtime.webhooks
    made = await create(gw, receivers.url + "/discord", ["webhook.test"], kind="discord")
    gw.runtime.webhook_sender.poll_s = 3600  # this replica's sender stays out of it
    await asyncio.sleep(0.1)
    before = len(receivers.received.get("discord", []))
    delivery = await store.test(DEFAULT_ORG_ID, made["id"])
    (claimed,) = await store.claim_due(10, lease_s=1.0)  # a sender that then dies
    assert claimed.id == delivery.id
    assert await store.claim_due(10, lease_s=1.0) == []  # held meanwhile
    await asyncio.sleep(1.1)
    assert await gw.runtime.webhook_sender.tick() == 1
    assert len(receivers.received["discord"]) == before + 1
    async with gw.engine.connect() as conn:
        row = (
            (await conn.execute(select(WebhookDelivery).where(WebhookDelivery.id == delivery.id)))
            .mappings()
            .one()
        )
    assert row["status"] == "delivered"


async def test_breaker_events_go_to_the_operator_and_other_orgs_may_not_subscribe(gw, receivers):
    made = await create(gw, receivers.url + "/standard/ops", ["breaker.opened", "breaker.closed"])
    receivers.secrets["ops"] = made["secret"]
    gw.runtime.breakers.cool_down("gpt-test", 30, "429 rate_limit_exceeded")

    async def opened() -> list:
        return receivers.received.get("standard/ops", [])

    (event,) = await eventually(opened)
    assert event["body"]["type"] == "breaker.opened"
    assert event["body"]["data"]["target"] == "gpt-test"

    from tests.unit.test_tenancy import new_org  # an organisation of its own

    other = await new_org(gw, "webhook-org")
    resp = await gw.http.post(
        "/v1/organization/webhooks",
        json={"url": receivers.url + "/slack", "kind": "slack", "events": ["breaker.opened"]},
        headers={"Authorization": f"Bearer {other.admin}"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "events"


async def test_bad_endpoints_are_400s_naming_the_field(gw, receivers):
    for body, param in [
        ({"url": "ftp://x/y", "events": ["webhook.test"]}, "url"),
        ({"url": "http://127.0.0.1:8000/v1/models", "events": ["webhook.test"]}, "url"),
        ({"url": receivers.url + "/slack", "events": ["made.up"]}, "events"),
        ({"url": receivers.url + "/slack", "events": []}, "events"),
        ({"url": receivers.url + "/slack", "events": ["webhook.test"], "kind": "irc"}, "kind"),
    ]:
        resp = await gw.http.post("/v1/organization/webhooks", json=body, headers=admin(gw))
        assert resp.status_code == 400, (body, resp.text)
        assert (resp.json()["error"]["param"] or "").startswith(param), resp.text
    user = await gw.http.get(
        "/v1/organization/webhooks", headers={"Authorization": f"Bearer {gw.user_key}"}
    )
    assert user.status_code in (401, 403)


async def test_events_render_for_every_kind():
    from forge.webhooks.formats import KINDS, render

    event = Event(type="breaker.opened", timestamp=datetime.now(UTC), data={"target": "m"})
    for kind in KINDS:
        assert render(kind, event)


async def test_a_delivery_being_sent_is_not_replayed_under_its_sender(gw, receivers):
    store = gw.runtime.webhooks
    made = await create(gw, receivers.url + "/slack", ["webhook.test"], kind="slack")
    gw.runtime.webhook_sender.poll_s = 3600
    await asyncio.sleep(0.1)
    delivery = await store.test(DEFAULT_ORG_ID, made["id"])
    (held,) = await store.claim_due(10, lease_s=30)
    resp = await gw.http.post(
        f"/v1/organization/webhooks/{made['id']}/deliveries/{delivery.id}/replay",
        headers=admin(gw),
    )
    assert resp.status_code == 409, resp.text
    assert await gw.runtime.webhook_sender.send(held)  # the holder settles it


async def test_a_receiver_that_never_finishes_is_cut_off_within_the_timeout(gw):
    from aiohttp import web

    from tests.fakes.server import ThreadedServer

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=500)
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b"x")
            await asyncio.sleep(0.1)
        return resp

    def app() -> web.Application:
        a = web.Application()
        a.router.add_post("/slow", trickle)
        return a

    server = ThreadedServer(app).start()
    try:
        sender = gw.runtime.webhook_sender
        sender._timeout_s = 0.5
        made = await create(gw, server.url + "/slow", ["webhook.test"], kind="slack")
        sender.poll_s = 3600
        await asyncio.sleep(0.1)
        await gw.runtime.webhooks.test(DEFAULT_ORG_ID, made["id"])
        (held,) = await gw.runtime.webhooks.claim_due(10, lease_s=30)
        t0 = asyncio.get_running_loop().time()
        assert not await sender.send(held)
        assert asyncio.get_running_loop().time() - t0 < 8  # not the receiver's 10 s
        resp = await gw.http.get(
            f"/v1/organization/webhooks/{made['id']}/deliveries", headers=admin(gw)
        )
        assert "no answer within 0.5 s" in resp.json()["data"][0]["last_error"]
    finally:
        server.stop()


async def test_an_endpoints_url_events_and_description_can_change(gw, receivers):
    made = await create(gw, receivers.url + "/standard/before", ["webhook.test"])
    receivers.secrets["before"] = receivers.secrets["after"] = made["secret"]
    path = f"/v1/organization/webhooks/{made['id']}"
    changed = await gw.http.post(
        path,
        json={
            "url": receivers.url + "/standard/after",
            "events": ["webhook.test", "api_key.deleted"],
            "description": "on-call",
        },
        headers=admin(gw),
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["events"] == ["api_key.deleted", "webhook.test"]
    assert body["description"] == "on-call" and "secret" not in body
    assert (await gw.http.get(path, headers=admin(gw))).json() == body
    await gw.http.post(f"{path}/test", headers=admin(gw))

    async def arrived() -> list:
        return receivers.received.get("standard/after", [])

    assert [r["body"]["type"] for r in await eventually(arrived)] == ["webhook.test"]
    assert not receivers.received.get("standard/before")
    only_events = await gw.http.post(path, json={"events": ["webhook.test"]}, headers=admin(gw))
    assert only_events.json()["description"] == "on-call"  # what is not sent stays


@pytest.mark.parametrize(
    ("change", "param", "status"),
    [
        ({"events": []}, "events", 400),
        ({"events": ["no.such_event"]}, "events[0]", 400),
        ({"url": "ftp://example.com/hook"}, "url", 400),
        ({"url": "http://127.0.0.1:8000/v1/chat/completions"}, "url", 400),
        ({"kind": "slack"}, "kind", 400),
    ],
)
async def test_bad_changes_are_400s_naming_the_field(gw, receivers, change, param, status):
    made = await create(gw, receivers.url + "/standard/z", ["webhook.test"])
    resp = await gw.http.post(
        f"/v1/organization/webhooks/{made['id']}", json=change, headers=admin(gw)
    )
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["param"] == param


async def test_changing_an_unknown_endpoint_is_a_404(gw):
    resp = await gw.http.post(
        "/v1/organization/webhooks/whep_nope", json={"description": "x"}, headers=admin(gw)
    )
    assert resp.status_code == 404 and resp.json()["error"]["param"] == "webhook_id"
