"""Durable usage: the store that writes records, and the actor that owns it.

A record is written with its request id as primary key and ``ON CONFLICT DO NOTHING``:
a gateway that re-sends a batch (because the actor died before acknowledging it) cannot
create duplicates, so at-least-once delivery becomes exactly-once storage.
"""

from __future__ import annotations

import ray
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from forge.db.engine import make_engine
from forge.db.schema import UsageRecord
from forge.settings import Settings
from forge.usage import UsageEvent


class UsageStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    async def write(self, events: list[UsageEvent]) -> int:
        """Insert ``events`` in one transaction; returns how many were new."""
        if not events:
            return 0
        # One multi-row INSERT (not executemany) so that rowcount is exact on asyncpg too.
        stmt = (
            self._insert(UsageRecord)
            .values([e.model_dump() for e in events])
            .on_conflict_do_nothing(index_elements=[UsageRecord.request_id])
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt)
        return max(result.rowcount, 0)


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class UsageRecorderActor:
    """Ray shell: returns only after the batch is committed, which is the acknowledgement
    the gateway waits for before it forgets a record."""

    def __init__(self) -> None:
        self._engine = make_engine(Settings().resolved_database_url())
        self._store = UsageStore(self._engine)

    async def record(self, events: list[UsageEvent]) -> int:
        return await self._store.write(events)

    async def ping(self) -> bool:
        return True
