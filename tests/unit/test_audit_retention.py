"""Audit retention per organisation on one chain that spans organisations: entries past
their organisation's period become stubs (content and personal values gone, hashes kept)
and the chain still verifies; the leading stubs are compacted into a checkpoint that
verification starts from; an entry deleted by hand and dressed up as a stub is caught.
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import func, select, update

from forge.audit.chain import Stub
from forge.audit.store import AuditEvent, AuditStore
from forge.db.engine import make_sessionmaker
from forge.db.schema import AuditLogEntry, AuditPersonal
from forge.identity.compliance import ComplianceReports
from tests.unit.harness import in_process_gateway, platform_config

DAY = 86_400


async def write(store: AuditStore, orgs: str) -> None:
    for i, org in enumerate(orgs):
        await store.append(
            AuditEvent(
                type="project.created",
                org_id=f"org-{org}",
                details={"id": f"proj-{i}", "email": f"p{i}@acme.test"},
                source_ip=f"10.0.0.{i}",
            )
        )


async def age(engine, seqs: range, days: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(AuditLogEntry)
            .where(AuditLogEntry.seq.in_(list(seqs)))
            .values(effective_at=AuditLogEntry.effective_at - days * DAY)
        )


async def test_stubs_keep_the_chain_whole_and_compaction_starts_it_at_a_checkpoint(engine):
    store = AuditStore(make_sessionmaker(engine))
    await write(store, "abab")
    async with engine.connect() as conn:
        first = int((await conn.execute(select(func.min(AuditLogEntry.seq)))).scalar() or 0)
    await age(engine, range(first, first + 4), 40)
    await write(store, "a")  # a young entry of org-a
    now = int(time.time())

    assert await store.purge("org-a", 30, now) == 2
    verdict = await store.verify()
    assert verdict.ok and (verdict.entries, verdict.purged) == (5, 2), verdict
    kept = (await store.list("org-a", limit=10)).data
    assert [e[e["type"]]["id"] for e in kept] == ["proj-0"]  # the young one (its own loop)
    assert [e.id async for e in store.entries("org-a")] == [kept[0]["id"]]
    async with engine.connect() as conn:
        personal = (await conn.execute(select(func.count()).select_from(AuditPersonal))).scalar()
    assert personal == 3 * 2  # the purged entries' email and address are gone
    assert len((await store.list("org-b", limit=10)).data) == 2  # org-b keeps for ever
    # and reports read no stub (org-a's first is not yet compacted: it still exists)
    reports = ComplianceReports(make_sessionmaker(engine))
    actions = await reports.report("admin_actions", "org-a", 0)
    assert [(a["event"], a["count"]) for a in actions] == [("project.created", 1)]

    assert await store.compact() == 1  # only the leading stub: org-b's entry is next
    verdict = await store.verify()
    assert verdict.ok and (verdict.entries, verdict.compacted) == (4, 1), verdict

    assert await store.purge("org-b", 30, now) == 2
    # two replicas compacting at once: one does it (everything before org-a's young
    # entry), the other finds it done or rolls back; never a checkpoint moved backwards
    assert sorted(await asyncio.gather(store.compact(), store.compact())) == [0, 3]
    await write(store, "b")
    verdict = await store.verify()
    assert verdict.ok and (verdict.entries, verdict.purged, verdict.compacted) == (2, 0, 4)


async def test_an_entry_deleted_by_hand_and_made_to_look_purged_is_caught(engine):
    store = AuditStore(make_sessionmaker(engine))
    await write(store, "aaa")
    async with engine.begin() as conn:
        middle = (
            await conn.execute(select(AuditLogEntry.seq).order_by(AuditLogEntry.seq).offset(1))
        ).scalar()
        forged = Stub(purged_at=int(time.time()), retention_days=30)
        await conn.execute(
            update(AuditLogEntry)
            .where(AuditLogEntry.seq == middle)
            .values(content=forged.model_dump_json(), purged_at=forged.purged_at)
        )
    verdict = await store.verify()
    assert not verdict.ok and "before its retention period ended" in (verdict.problem or "")


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def test_the_organisations_audit_period_is_set_in_its_data_retention(gw):
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    await gw.http.post("/v1/organization/projects", headers=admin, json={"name": "old work"})
    async with gw.engine.begin() as conn:
        await conn.execute(
            update(AuditLogEntry).values(effective_at=AuditLogEntry.effective_at - 100 * DAY)
        )
    assert (await gw.runtime.retention.purge())["audit_entries"] == 0  # kept for ever
    set_period = await gw.http.post(
        "/v1/organization/data_retention",
        headers=admin,
        json={"retention_type": "modified_abuse_monitoring", "audit_retention_days": 90},
    )
    assert set_period.status_code == 200 and set_period.json()["audit_retention_days"] == 90
    assert (await gw.runtime.retention.purge())["audit_entries"] >= 1
    listed = await gw.http.get("/v1/organization/audit_logs?limit=100", headers=admin)
    entries = listed.json()["data"]
    types = [e["type"] for e in entries]
    assert "project.created" not in types and "organization.updated" in types
    (said,) = [e for e in entries if e["type"] == "audit_log.purged"]  # in its own log
    assert said["audit_log.purged"]["retention_days"] == 90
    assert said["audit_log.purged"]["count"] >= 1
    operator = {"authorization": f"Bearer {gw.operator_key}"}
    verified = await gw.http.get("/admin/audit/verify", headers=operator)
    assert verified.status_code == 200 and verified.json()["ok"], verified.text
    too_long = await gw.http.post(
        "/v1/organization/data_retention",
        headers=admin,
        json={"retention_type": "modified_abuse_monitoring", "audit_retention_days": 99_999},
    )
    assert too_long.status_code == 400 and too_long.json()["error"]["param"]
