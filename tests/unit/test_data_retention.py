"""Data retention in OpenAI's shapes, and what it does: a zero-data-retention project
stores no Response (``store`` echoes false) and keeps no exchange for learning, and the
purge deletes bodies and usage records that outlived their organisation's periods."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from forge.db.schema import StoredResponse, UsageRecord, utcnow
from tests.specs.validate import violations
from tests.unit.harness import in_process_gateway, platform_config


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def count(gw, table) -> int:
    async with gw.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar() or 0)


async def respond(gw) -> object:
    return await gw.sdk().responses.create(model="gpt-test", input="hello")


async def test_the_controls_in_openai_shapes_and_zero_retention_keeps_no_body(gw):
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    org = (await gw.http.get("/v1/organization/data_retention", headers=admin)).json()
    assert violations("OrganizationDataRetention", org) == []
    assert org["type"] == "modified_abuse_monitoring" and org["body_retention_days"] == 30
    project_path = "/v1/organization/projects/proj_default/data_retention"
    project = (await gw.http.get(project_path, headers=admin)).json()
    assert violations("ProjectDataRetention", project) == []
    assert project["type"] == "organization_default"

    kept = await respond(gw)
    assert (await gw.sdk().responses.retrieve(kept.id)).id == kept.id
    changed = await gw.http.post(
        "/v1/organization/data_retention",
        headers=admin,
        json={"retention_type": "zero_data_retention"},
    )
    assert changed.status_code == 200 and changed.json()["type"] == "zero_data_retention"
    raw = await gw.sdk().responses.with_raw_response.create(model="gpt-test", input="hi")
    assert raw.parse().store is False  # echoed as done: not stored
    assert await count(gw, StoredResponse) == 1

    # the project may differ from its organisation
    back = await gw.http.post(project_path, headers=admin, json={"retention_type": "none"})
    assert back.json() == {"object": "project.data_retention", "type": "none"}
    assert (await respond(gw)).store is True
    bad = await gw.http.post(project_path, headers=admin, json={"retention_type": "forever"})
    assert bad.status_code == 400 and bad.json()["error"]["param"]
    days = await gw.http.post(
        "/v1/organization/data_retention",
        headers=admin,
        json={"retention_type": "modified_abuse_monitoring", "body_retention_days": 0},
    )
    assert days.status_code == 400
    missing = await gw.http.get(
        "/v1/organization/projects/proj-nowhere/data_retention", headers=admin
    )
    assert missing.status_code == 404


async def test_the_purge_deletes_what_outlived_its_periods(gw):
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    for _ in range(2):
        await respond(gw)
    assert await gw.runtime.shipper.flush()
    async with gw.engine.begin() as conn:  # one of each, 10 days old
        old = utcnow() - timedelta(days=10)
        first = (await conn.execute(select(StoredResponse.id).limit(1))).scalar()
        await conn.execute(
            update(StoredResponse).where(StoredResponse.id == first).values(created_at=old)
        )
        record = (await conn.execute(select(UsageRecord.request_id).limit(1))).scalar()
        await conn.execute(
            update(UsageRecord).where(UsageRecord.request_id == record).values(created_at=old)
        )
    usage = await count(gw, UsageRecord)
    assert (await gw.runtime.retention.purge()) == {
        "responses": 0,
        "learning_examples": 0,
        "usage_records": 0,
        "audit_entries": 0,
    }
    await gw.http.post(
        "/v1/organization/data_retention",
        headers=admin,
        json={
            "retention_type": "modified_abuse_monitoring",
            "body_retention_days": 7,
            "usage_retention_days": 7,
        },
    )
    gone = await gw.runtime.retention.purge()
    assert gone == {"responses": 1, "learning_examples": 0, "usage_records": 1, "audit_entries": 0}
    assert await count(gw, StoredResponse) == 1 and await count(gw, UsageRecord) == usage - 1
    await gw.http.post(
        "/v1/organization/data_retention",
        headers=admin,
        json={"retention_type": "zero_data_retention"},
    )
    assert (await gw.runtime.retention.purge())["responses"] == 1  # zero: every body goes


async def test_zero_retention_keeps_no_exchange_for_learning(sqlite_engine):
    from forge.db.engine import make_sessionmaker
    from forge.db.schema import LearningExample, LearningPolicy
    from forge.finetune.learning import LearningStore
    from gateway.learning_capture import LearningCapture

    store = LearningStore(make_sessionmaker(sqlite_engine))
    alias = "ft:tiny:acme:support"
    await store.save_policy(
        LearningPolicy(project_id="p1", suffix="support", org_id="o1", base_model="tiny",
                       alias=alias, current=alias + ":0a1b2c3d", validation_file="file-v",
                       retrain_every=5, min_score=0.5, enabled=True, created_at=utcnow())
    )  # fmt: skip
    body = {"model": alias, "messages": [{"role": "user", "content": "hi"}]}
    answer = b'{"choices": [{"message": {"content": "hello"}}]}'
    for keeps, request_id in ((False, "req-zdr"), (True, "req-kept")):

        async def allowed(_: str, keeps: bool = keeps) -> bool:
            return keeps

        capture = LearningCapture(store, keeps_bodies=allowed)
        capture.offer(request_id, "o1", "p1", body, answer)
        await capture.flush()
    async with sqlite_engine.connect() as conn:
        kept = (await conn.execute(select(LearningExample.request_id))).scalars().all()
    assert kept == ["req-kept"]
