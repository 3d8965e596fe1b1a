"""Spend counters kept with the usage records (SQLite and PostgreSQL): they equal the
sum of the records per key, project and organisation, per UTC day and month, however
often a batch is delivered; and an existing database is counted when it upgrades."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from actors.usage_recorder import UsageStore
from forge.db.engine import make_engine, make_sessionmaker
from forge.db.migrate import upgrade_async
from forge.db.schema import Spend, UsageRecord
from forge.spend import period_start
from forge.usage import UsageEvent
from tests.conftest import _drop_postgres, _fresh_postgres


def event(i: int, when: datetime, key: str = "key_a", cost: float = 0.25) -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{key}-{i}",
        created_at=when,
        key_id=key,
        org_id="org-s",
        project_id="proj_s",
        endpoint="chat/completions",
        model="m",
        provider="p",
        provider_model="m",
        stream=False,
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=cost,
        latency_ms=1.0,
        status="ok",
        http_status=200,
    )


def test_periods_are_utc_days_and_months():
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert period_start(late, "day") == "2026-11-30" and period_start(late, "month") == "2026-11-01"
    assert period_start(datetime(2026, 12, 3, 1, 0), "month") == "2026-12-01"  # naive: UTC


async def counters(engine) -> dict[tuple[str, str, str, str], tuple[float, int, int]]:
    async with make_sessionmaker(engine)() as s:
        rows = await s.scalars(select(Spend))
        return {
            (r.scope, r.subject_id, r.period, r.period_start): (
                round(r.cost_usd, 6),
                r.requests,
                r.tokens,
            )
            for r in rows
        }


async def test_counters_equal_the_records_however_often_a_batch_arrives(engine):
    store = UsageStore(engine)
    nov = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    dec = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    batch = [event(i, nov) for i in range(3)] + [event(i, dec, "key_b") for i in range(2)]
    assert await store.write(batch) == 5
    assert await store.write([*batch, event(9, dec)]) == 1  # a retried batch: one new
    got = await counters(engine)
    assert got["key", "key_a", "month", "2026-11-01"] == (0.75, 3, 45)
    assert got["key", "key_a", "day", "2026-12-01"] == (0.25, 1, 15)
    assert got["project", "proj_s", "month", "2026-12-01"] == (0.75, 3, 45)
    assert got["organization", "org-s", "day", "2026-11-30"] == (0.75, 3, 45)
    async with engine.connect() as conn:
        total = await conn.scalar(select(func.sum(UsageRecord.cost_usd)))
    months = [v for k, v in got.items() if k[0] == "organization" and k[2] == "month"]
    assert sum(c for c, _, _ in months) == pytest.approx(total)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_an_existing_database_is_counted_when_it_upgrades(tmp_path, backend):
    """Migration 0008 counts the records already there (its SQL differs per dialect)."""
    name = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    else:
        made = await _fresh_postgres()
        assert made is not None, "PostgreSQL at 127.0.0.1:5432 is not running"
        url, name = made
    await upgrade_async(url, "0007")
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for i, day in enumerate((3, 3, 4)):
                await conn.execute(
                    UsageRecord.__table__.insert().values(
                        # the record as a database at 0007 holds it (no routing columns)
                        event(i, datetime(2026, 12, day, 12, tzinfo=UTC)).model_dump(
                            exclude={"route", "arm", "validation"}
                        )
                    )
                )
        await upgrade_async(url)
        got = await counters(engine)
        assert got["key", "key_a", "day", "2026-12-03"] == (0.5, 2, 30)
        assert got["organization", "org-s", "month", "2026-12-01"] == (0.75, 3, 45)
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT COUNT(*) FROM spend")) == 3 * 2 + 3
    finally:
        await engine.dispose()
        if name is not None:
            await _drop_postgres(name)
