"""The audit log: admin actions and refusals recorded in OpenAI's shape through the
gateway, auth failures sampled, secrets kept out, and the hash chain catching an entry
changed or deleted in the database (SQLite and PostgreSQL, concurrent writers)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from forge.audit.chain import GENESIS, ChainEntry, link, verify
from forge.audit.store import AuditEvent, AuditStore
from forge.cli import app as cli
from forge.db.engine import make_sessionmaker
from forge.db.schema import AuditLogEntry
from gateway.audit import AUDIT_EVENT, AuthFailures
from tests.unit.harness import in_process_gateway, platform_config
from tests.unit.test_tenancy import _routes, call, conforms, populated

BASE = "/v1/organization/projects"


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


def chain(n: int) -> list[ChainEntry]:
    entries, prev = [], GENESIS
    for i in range(n):
        content = {"id": f"e{i}", "type": "project.created", "n": i}
        entries.append(
            ChainEntry(seq=i, id=f"e{i}", prev_hash=prev, hash=link(prev, content), content=content)
        )
        prev = entries[-1].hash
    return entries


def test_the_chain_catches_a_changed_entry_and_a_deleted_one():
    entries = chain(5)
    assert verify(entries).ok and verify(entries).entries == 5
    changed = [e.model_copy(deep=True) for e in entries]
    changed[2].content["type"] = "project.archived"
    verdict = verify(changed)
    assert not verdict.ok and verdict.first_bad_id == "e2" and "changed" in verdict.problem
    verdict = verify(entries[:1] + entries[2:])
    assert not verdict.ok and verdict.first_bad_id == "e2" and "deleted" in verdict.problem
    # the newest entries deleted: a shorter chain, whole; its head shows the difference
    assert verify(entries[:4]).ok and verify(entries[:4]).head_hash != verify(entries).head_hash


def test_auth_failures_are_sampled_per_address_and_reason():
    now = [0.0]
    sampler = AuthFailures(clock=lambda: now[0])
    assert sampler.due("1.2.3.4", "invalid_api_key")
    assert not sampler.due("1.2.3.4", "invalid_api_key")
    assert sampler.due("1.2.3.4", "revoked_api_key") and sampler.due("5.6.7.8", "invalid_api_key")
    now[0] += 61
    assert sampler.due("1.2.3.4", "invalid_api_key") and sampler.suppressed == 1


async def test_concurrent_writers_keep_one_unbroken_chain(engine):
    """Writers racing for the head (the unique prev_hash makes the loser retry)."""
    store = AuditStore(make_sessionmaker(engine))
    events = [
        AuditEvent(type="project.created", org_id="org-x", details={"id": str(i)})
        for i in range(12)
    ]
    await asyncio.gather(*(store.append(e) for e in events))
    verdict = await store.verify()
    assert verdict.ok and verdict.entries == 12
    page = await store.list("org-x", limit=100)
    assert len(page.data) == 12 and page.data[0]["effective_at"] >= page.data[-1]["effective_at"]


async def test_admin_actions_and_refusals_are_listed_in_openais_shape(gw):
    org = await populated(gw, "audited")
    await call(
        gw,
        "POST",
        f"{BASE}/{org.project}/rate_limits/rl-gpt-test",
        org.admin,
        json={"max_requests_per_1_minute": -1},
    )  # refused: 400
    await call(
        gw,
        "PUT",
        "/admin/rate_limits",
        org.admin,
        json={"scope": "organization", "subject_id": org.id, "max_requests_per_1_minute": 10**6},
    )  # refused: 403, raising its own
    await call(gw, "POST", f"{BASE}/{org.project}/archive", org.admin)
    listed = conforms(
        "ListAuditLogsResponse",
        await call(gw, "GET", "/v1/organization/audit_logs?limit=100", org.admin),
    )
    entries = listed["data"]
    types = [e["type"] for e in entries]
    assert types[0] == "project.archived"  # newest first
    assert {"project.created", "service_account.created", "api_key.created"} <= set(types)
    refusals = {e["result"]["status"]: e for e in entries if e["result"]["status"] >= 400}
    assert refusals[403]["type"] == "rate_limit.updated"
    assert refusals[400]["result"]["error_code"] == "invalid_value"
    archived = entries[0]
    assert archived["project.archived"]["id"] == org.project
    assert archived["project"] == {"id": org.project}
    assert archived["actor"]["type"] == "api_key" and archived["actor"]["api_key"]["id"]
    assert archived["source_ip"]
    created = next(e for e in entries if e["type"] == "project.created")
    assert created["project.created"]["data"] == {"name": "app"}
    # a key's secret is never in the log (its creation is, by id)
    assert org.user not in orjson.dumps(entries).decode()
    # filters
    only = await call(
        gw,
        "GET",
        "/v1/organization/audit_logs",
        org.admin,
        params={"event_types[]": "project.archived"},
    )
    assert [e["type"] for e in only.json()["data"]] == ["project.archived"]
    page = await call(
        gw, "GET", f"/v1/organization/audit_logs?limit=2&after={entries[1]['id']}", org.admin
    )
    assert page.json()["data"][0]["id"] == entries[2]["id"]
    bad = await call(gw, "GET", "/v1/organization/audit_logs?after=audit_log-nope", org.admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"
    # another organisation sees none of it
    other = await populated(gw, "audited-other")
    theirs = await call(gw, "GET", "/v1/organization/audit_logs?limit=100", other.admin)
    assert org.project not in theirs.text


async def test_bad_keys_leave_sampled_auth_events(gw):
    for _ in range(3):
        resp = await gw.http.get("/v1/models", headers={"authorization": "Bearer sk-forge-nope"})
        assert resp.status_code == 401
    async with make_sessionmaker(gw.engine)() as s:
        query = select(AuditLogEntry).where(AuditLogEntry.type == "login.failed")
        rows = list(await s.scalars(query))
    assert len(rows) == 1  # three tries from one address, one entry a minute
    assert "sk-forge-nope" not in rows[0].content


async def test_verify_finds_tampering_and_export_writes_jsonl(gw, tmp_path, monkeypatch):
    org = await populated(gw, "tamper")
    ok = await call(gw, "GET", "/admin/audit/verify", gw.operator_key)
    assert ok.json()["ok"] and ok.json()["entries"] >= 4
    assert (await call(gw, "GET", "/admin/audit/verify", org.admin)).status_code == 403
    export = await call(gw, "GET", f"/admin/audit/export?org_id={org.id}", gw.operator_key)
    lines = [orjson.loads(line) for line in export.text.splitlines()]
    assert lines and all(line["content"]["organization_id"] == org.id for line in lines)
    async with gw.engine.begin() as conn:
        victim = (
            await conn.execute(
                select(AuditLogEntry.seq, AuditLogEntry.id, AuditLogEntry.content)
                .order_by(AuditLogEntry.seq)
                .offset(1)
                .limit(1)
            )
        ).one()
        forged = victim.content.replace('"status":', '"status":1')
        await conn.execute(
            update(AuditLogEntry).where(AuditLogEntry.seq == victim.seq).values(content=forged)
        )
    bad = (await call(gw, "GET", "/admin/audit/verify", gw.operator_key)).json()
    assert not bad["ok"] and bad["first_bad_id"] == victim.id and "changed" in bad["problem"]
    async with gw.engine.begin() as conn:
        await conn.execute(delete(AuditLogEntry).where(AuditLogEntry.seq == victim.seq))
    gone = (await call(gw, "GET", "/admin/audit/verify", gw.operator_key)).json()
    assert not gone["ok"] and "deleted" in gone["problem"]


def test_forge_audit_verify_and_export(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    runner = CliRunner()
    made = runner.invoke(cli, ["orgs", "create", "--name", "cli-audited"])
    assert made.exit_code == 0, made.output
    ok = runner.invoke(cli, ["audit", "verify", "--json"])
    assert ok.exit_code == 0 and orjson.loads(ok.output)["ok"]
    head = orjson.loads(ok.output)["head_hash"]
    assert runner.invoke(cli, ["audit", "verify", "--expect-head", head]).exit_code == 0
    stale = runner.invoke(cli, ["audit", "verify", "--expect-head", "0" * 64])
    assert stale.exit_code == 1 and "head" in stale.output
    exported = runner.invoke(cli, ["audit", "export"])
    assert exported.exit_code == 0
    [line] = exported.output.splitlines()
    assert orjson.loads(line)["content"]["type"] == "organization.created"


def test_every_mutating_admin_route_declares_its_audit_event(gw):
    """Walks the app's routes: a new admin route that changes something and forgets to
    say what it audits fails here."""
    spec = gw.app.openapi()
    missing = [
        (method, path)
        for method, path in _routes(gw.app)
        if method != "GET"
        and path.startswith(("/admin", "/v1/organization"))
        and AUDIT_EVENT not in spec["paths"][path][method.lower()]
    ]
    assert not missing
    # and each event is one of OpenAI's audit-log event types (platform-only events aside)
    from tests.specs.extract_openai_subset import SUBSET, load

    known = set(load(SUBSET)["components"]["schemas"]["AuditLogEventType"]["enum"])
    # the operator's (above OpenAI's organisations), and a LoRA adapter loaded (OpenAI has
    # only resource.deleted)
    ours = {"organization.created", "organization.deleted", "resource.created"}
    declared = {
        operation[AUDIT_EVENT]
        for methods in spec["paths"].values()
        for operation in methods.values()
        if AUDIT_EVENT in operation
    }
    assert declared - ours <= known, declared - ours - known
