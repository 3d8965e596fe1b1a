"""The org directory: who holds which key. One actor owns the key table; gateway
replicas ask it on a cache miss and keep the answer for a short TTL."""

from __future__ import annotations

import ray

from forge.db.engine import make_engine, make_sessionmaker
from forge.keys import CreatedKey, KeyInfo, KeyStore, Role
from forge.settings import Settings


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class DirectoryActor:
    """Ray shell over ``KeyStore``. The database is the state, so a restart loses nothing;
    calls that hit a restart fail (no blind retry of a key creation) and callers retry."""

    def __init__(self) -> None:
        self._engine = make_engine(Settings().resolved_database_url())
        self._keys = KeyStore(make_sessionmaker(self._engine))

    async def verify(self, key_hash: str) -> KeyInfo | None:
        return await self._keys.lookup(key_hash)

    async def create_key(self, name: str, role: Role = "user") -> CreatedKey:
        return await self._keys.create_key(name, role)

    async def list_keys(self) -> list[KeyInfo]:
        return await self._keys.list_keys()

    async def revoke_key(self, key_id: str) -> KeyInfo:
        return await self._keys.revoke_key(key_id)

    async def ping(self) -> bool:
        return True
