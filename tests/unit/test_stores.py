"""The durable stores on SQLite and PostgreSQL: keys hashed, usage written exactly once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from actors.usage_recorder import UsageStore
from forge.db.engine import make_sessionmaker
from forge.db.schema import ApiKey, UsageRecord
from forge.keys import KeyStore, hash_key
from forge.usage import UsageEvent
from gateway.usage_shipper import UsageShipper


def event(i: int) -> UsageEvent:
    return UsageEvent(
        request_id=f"req_{i}",
        created_at=datetime.now(UTC),
        key_id="k",
        endpoint="chat/completions",
        model="m",
        provider="p",
        provider_model="pm",
        stream=False,
        prompt_tokens=3,
        completion_tokens=4,
        cost_usd=0.001,
        latency_ms=1.5,
        status="ok",
        http_status=200,
    )


async def count(engine) -> int:
    async with engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(UsageRecord))


async def test_keys_are_stored_hashed_and_revocable(engine):
    store = KeyStore(make_sessionmaker(engine))
    created = await store.create_key("ci")
    async with engine.connect() as conn:
        stored = (await conn.execute(select(ApiKey))).mappings().one()
    assert created.key not in str(dict(stored))
    assert stored["key_hash"] == hash_key(created.key)
    assert (await store.lookup(hash_key(created.key))).name == "ci"
    revoked = await store.revoke_key(created.info.id)
    assert revoked.revoked_at is not None
    assert (await store.lookup(hash_key(created.key))).revoked_at is not None


async def test_master_key_is_generated_once_or_taken_from_the_environment(engine):
    store = KeyStore(make_sessionmaker(engine))
    first = await store.ensure_master(None)
    assert first and first.startswith("sk-forge-")
    assert await store.ensure_master(None) is None
    assert await store.ensure_master("sk-forge-given") is None
    assert (await store.lookup(hash_key("sk-forge-given"))).role == "platform"


async def test_usage_write_is_idempotent(engine):
    store = UsageStore(engine)
    assert await store.write([event(1), event(2)]) == 2
    assert await store.write([event(2), event(3)]) == 1
    assert await count(engine) == 3


async def test_shipper_keeps_records_until_the_sink_acknowledges(engine):
    store = UsageStore(engine)
    failures = {"left": 2}

    async def flaky_sink(batch):
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("recorder restarting")
        return await store.write(batch)

    shipper = UsageShipper(flaky_sink, flush_interval_s=0.01, max_batch=3)
    for i in range(7):
        shipper.add(event(i))
    assert await shipper.flush(timeout_s=10)
    assert shipper.failures == 2 and shipper.pending == 0
    assert await count(engine) == 7
    await shipper.close()


@pytest.mark.parametrize("bad", ["", "Bearer"])
async def test_lookup_of_unknown_hash_is_none(engine, bad):
    assert await KeyStore(make_sessionmaker(engine)).lookup(hash_key(bad or "x")) is None


async def test_adapter_registry_is_idempotent_and_refuses_a_different_spec(engine):
    from datetime import timedelta

    from forge.adapters import AdapterRegistry, AdapterSpec, adapter_version
    from forge.errors import Conflict, NotFound

    registry = AdapterRegistry(make_sessionmaker(engine))
    spec = AdapterSpec(name="support", base_model="tiny-llama", source="s3://bucket/support")
    first = await registry.register(spec)
    again = await registry.register(spec)
    assert first.created_at == again.created_at and first.source == spec.source
    with pytest.raises(Conflict):
        await registry.register(spec.model_copy(update={"source": "/elsewhere"}))
    assert [a.name for a in await registry.list()] == ["support"]
    stored = await registry.get("support")
    assert stored.base_model == "tiny-llama"
    # The version the gateway computes from `register`'s answer is the one a replica
    # computes from the stored row (time zone and precision survive the round trip).
    assert adapter_version(stored) == adapter_version(first)
    with pytest.raises(NotFound):  # only the registration made then: not a later one
        await registry.delete("support", first.created_at + timedelta(microseconds=1))
    await registry.delete("support", first.created_at)
    assert await registry.get("support") is None
    with pytest.raises(NotFound):
        await registry.delete("support")


async def test_records_the_database_refuses_are_set_aside_and_the_rest_written(engine):
    """One bad record (a count no integer column holds; on PostgreSQL also a string over
    its column) used to fail the whole shipment, forever: 500 requests went unrecorded."""
    store = UsageStore(engine)
    batch = [event(i) for i in range(9)]
    batch[2] = batch[2].model_copy(update={"prompt_tokens": 2**70})
    if engine.dialect.name == "postgresql":
        batch[6] = batch[6].model_copy(update={"client_request_id": "c" * 513})
    bad = {e.request_id for e in batch if e.prompt_tokens == 2**70 or e.client_request_id}
    assert await store.write(batch) == 9 - len(bad)
    async with engine.connect() as conn:
        stored = set(await conn.scalars(select(UsageRecord.request_id)))
    assert stored == {e.request_id for e in batch} - bad
    rejects = await store.rejects()
    assert {r["request_id"] for r in rejects} == bad
    assert await store.rejected_count() == len(bad)
    kept = UsageEvent.model_validate_json(rejects[0]["payload"])  # whole, for replay
    assert kept == next(e for e in batch if e.request_id == rejects[0]["request_id"])
    assert rejects[0]["error"]


async def test_a_database_that_is_down_is_raised_not_set_aside(tmp_path):
    """Only refusals for a record's values are set aside: with the table missing (or the
    database down) every record fails alike, and the batch must stay with the gateway."""
    from forge.db.engine import make_engine

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/empty.db")  # no schema
    try:
        with pytest.raises(Exception, match="no such table"):
            await UsageStore(engine).write([event(1), event(2)])
    finally:
        await engine.dispose()
