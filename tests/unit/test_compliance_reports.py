"""Compliance reports from the people, keys and audit trail of an organisation, as JSON
and as CSV (with cells a spreadsheet would run as formulas neutralised)."""

from __future__ import annotations

import csv
import io

import pytest

from tests.unit.test_identity import account, identity_gateway, login


@pytest.fixture
async def gw(fake_openai, sqlite_engine, tmp_path):
    async with identity_gateway(fake_openai, sqlite_engine, tmp_path) as h:
        yield h


async def report(gw, name: str, **params) -> object:
    answer = await gw.http.get(
        f"/v1/organization/compliance/{name}",
        params=params,
        headers={"authorization": f"Bearer {gw.admin_key}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["data"] if params.get("format") != "csv" else answer


async def test_roles_keys_admin_actions_and_failed_logins(gw):
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    reader_id = await account(gw, "rita@acme.test", role="reader")
    role = await gw.http.post(
        "/v1/organization/roles",
        headers=admin,
        json={"role_name": "project-writers", "permissions": ["api.organization.projects.write"]},
    )
    group = await gw.http.post("/v1/organization/groups", headers=admin, json={"name": "ops"})
    assert group.status_code == 200, group.text
    group_id = group.json()["id"]
    await gw.http.post(
        f"/v1/organization/groups/{group_id}/users", headers=admin, json={"user_id": reader_id}
    )
    await gw.http.post(
        f"/v1/organization/groups/{group_id}/roles",
        headers=admin,
        json={"role_id": role.json()["id"]},
    )
    made = await gw.http.post("/v1/organization/projects", headers=admin, json={"name": "p1"})
    assert made.status_code == 200
    await gw.keys.create_key("=SUM(1)")  # a key name a spreadsheet would run
    used = gw.sdk()
    await used.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert await gw.runtime.shipper.flush()
    assert (await login(gw, "rita@acme.test", "a wrong password")).status_code == 401
    await gw.runtime.identity.flush()

    roles = await report(gw, "roles")
    rita = [(r["role"], r["via"]) for r in roles if r["email"] == "rita@acme.test"]
    assert rita == [("reader", "organization"), ("project-writers", "group:ops")]

    keys = await report(gw, "keys")
    by_name = {k["name"]: k for k in keys}
    assert by_name["=SUM(1)"]["last_used_at"] is None and by_name["=SUM(1)"]["age_days"] == 0
    user_key = next(k for k in keys if k["name"] == "user")
    assert user_key["last_used_at"] is not None  # the chat call above

    actions = await report(gw, "admin_actions")
    events = {(a["event"], a["count"]) for a in actions}
    assert ("project.created", 1) in events and ("group.created", 1) in events
    assert not any(a["event"].startswith("login.") for a in actions)
    failed = await report(gw, "failed_logins")
    assert [(f["email"], f["reason"]) for f in failed] == [
        ("rita@acme.test", "invalid_credentials")
    ]
    later = await report(gw, "failed_logins", start_time=failed[0]["at"] + 1)
    assert later == []

    sheet = await report(gw, "keys", format="csv")
    assert sheet.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(sheet.text)))
    assert "'=SUM(1)" in [r["name"] for r in rows] and "key_id" in rows[0]
    unknown = await gw.http.get("/v1/organization/compliance/everything", headers=admin)
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "report"
