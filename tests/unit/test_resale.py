"""The Platform plan's resale features: sub-organisations (a customer's organisation,
created with its own admin key, listed, isolated from its parent and from others), and
the usage export (every record of a time range, JSON Lines or CSV, its
sub-organisations' with it when asked); both a 403 naming the plan elsewhere."""

from __future__ import annotations

import csv
import io
import time

import orjson
import pytest

from tests.unit.harness import in_process_gateway, platform_config
from tests.unit.test_tenancy import call, new_org, populated


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def ask(gw, key: str, n: int = 1) -> None:
    for _ in range(n):
        reply = await gw.sdk(key).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices


async def test_a_reseller_creates_and_lists_its_customers_organisations(gw):
    reseller = await new_org(gw, "reseller", "platform")
    made = await call(
        gw,
        "POST",
        "/v1/organization/sub_organizations",
        reseller.admin,
        json={"name": "customer-1", "plan": "community"},
    )
    assert made.status_code == 200, made.text
    child = made.json()["organization"]
    assert child["parent_id"] == reseller.id and child["plan"] == "community"
    child_key = made.json()["admin_key"]
    listed = await call(gw, "GET", "/v1/organization/sub_organizations", reseller.admin)
    assert [o["id"] for o in listed.json()["data"]] == [child["id"]]
    one = await call(gw, "GET", f"/v1/organization/sub_organizations/{child['id']}", reseller.admin)
    assert one.json()["name"] == "customer-1"
    # the customer is a tenant of its own: its admin key sees its projects, not the parent's
    mine = await call(gw, "GET", "/v1/organization/projects", child_key)
    assert mine.status_code == 200 and all(p["id"] != reseller.id for p in mine.json()["data"])
    # no reselling of resale, and nothing unknown
    for body, param in (
        ({"name": "c2", "plan": "platform"}, "plan"),
        ({"name": "c2", "extra": 1}, "extra"),
        ({"plan": "community"}, "name"),
    ):
        refused = await call(
            gw, "POST", "/v1/organization/sub_organizations", reseller.admin, json=body
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == param
    # another organisation's, or the parent itself, is not a sub-organisation here
    other = await new_org(gw, "other-reseller", "platform")
    for org_id in (child["id"], reseller.id):
        path = f"/v1/organization/sub_organizations/{org_id}"
        assert (await call(gw, "GET", path, other.admin)).status_code == 404
    assert (await call(gw, "GET", "/v1/organization/sub_organizations", other.admin)).json()[
        "data"
    ] == []


async def test_resale_is_the_platform_plans_and_a_403_naming_it_elsewhere(gw):
    org = await new_org(gw, "enterprise-only", "enterprise")
    for method, path in (
        ("GET", "/v1/organization/sub_organizations"),
        ("POST", "/v1/organization/sub_organizations"),
        ("GET", "/v1/organization/usage/export?start_time=0"),
    ):
        kw = {"json": {"name": "x"}} if method == "POST" else {}
        refused = await call(gw, method, path, org.admin, **kw)
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert error["code"] == "plan_feature_unavailable" and "Platform" in error["message"]


async def test_the_usage_export_streams_every_record_of_the_range(gw):
    reseller = await populated(gw, "exporter", "platform")
    await ask(gw, reseller.user, 3)
    made = await call(
        gw,
        "POST",
        "/v1/organization/sub_organizations",
        reseller.admin,
        json={"name": "exported-customer", "plan": "professional"},
    )
    child_admin = made.json()["admin_key"]
    await ask(gw, child_admin, 2)
    bystander = await populated(gw, "bystander")
    await ask(gw, bystander.user, 2)
    assert await gw.runtime.shipper.flush()
    start = int(time.time()) - 600
    path = f"/v1/organization/usage/export?start_time={start}"

    own = await call(gw, "GET", path, reseller.admin)
    assert own.status_code == 200, own.text
    assert own.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in own.headers["content-disposition"]
    rows = [orjson.loads(line) for line in own.text.splitlines()]
    assert len(rows) == 4  # populated's stored response, and three chats
    assert {r["org_id"] for r in rows} == {reseller.id}
    assert all(r["status"] == "ok" and r["model"] == "gpt-test" for r in rows)
    assert all(r["route"].startswith("gpt-test; strategy=priority") for r in rows)
    assert all(r["arm"] is None and r["feedback_score"] is None for r in rows)
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)

    both = await call(
        gw, "GET", path + "&include_sub_organizations=true&format=csv", reseller.admin
    )
    assert both.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(both.text)))
    assert len(table) == 6 and {r["org_id"] for r in table} == {
        reseller.id,
        made.json()["organization"]["id"],
    }
    assert float(table[0]["cost_usd"]) >= 0 and table[0]["request_id"]

    by_project = await call(gw, "GET", path + f"&project_ids={reseller.project}", reseller.admin)
    assert len(by_project.text.splitlines()) == 4
    later = await call(gw, "GET", f"{path}&end_time={start + 1}", reseller.admin)
    assert later.status_code == 200 and later.text == ""
    for query, param in (
        (f"start_time={start}&end_time={start}", "end_time"),
        ("start_time=-5", "start_time"),
        (f"start_time={start}&format=xml", "format"),
        ("", "start_time"),
    ):
        bad = await call(gw, "GET", f"/v1/organization/usage/export?{query}", reseller.admin)
        assert bad.status_code == 400, (query, bad.text)
        assert bad.json()["error"]["param"] == param
