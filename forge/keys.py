"""API keys: generation, hashing and the store the directory actor and the CLI share."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from forge.db.schema import ApiKey, utcnow
from forge.errors import NotFound

KEY_PREFIX = "sk-forge-"
MASTER_KEY_NAME = "master"
Role = Literal["admin", "user"]


class KeyInfo(BaseModel):
    """What a gateway needs to know about a verified key (never the key itself)."""

    id: str
    name: str
    prefix: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class CreatedKey(BaseModel):
    info: KeyInfo
    key: str


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 is right here: keys carry 256 random bits, so no slow KDF is needed,
    and verification stays a single hash on the hot path."""
    return hashlib.sha256(key.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        role=row.role,  # type: ignore[arg-type]
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class KeyStore:
    """Durable key records."""

    def __init__(self, sessions: async_sessionmaker) -> None:
        self._sessions = sessions

    async def create_key(
        self, name: str, role: Role = "user", key: str | None = None
    ) -> CreatedKey:
        key = key or generate_key()
        row = ApiKey(
            id=uuid.uuid4().hex,
            name=name,
            key_hash=hash_key(key),
            prefix=key[: len(KEY_PREFIX) + 4],
            role=role,
            created_at=utcnow(),
        )
        async with self._sessions() as s, s.begin():
            s.add(row)
        return CreatedKey(info=_info(row), key=key)

    async def lookup(self, key_hash: str) -> KeyInfo | None:
        async with self._sessions() as s:
            row = await s.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
        return _info(row) if row else None

    async def list_keys(self) -> list[KeyInfo]:
        async with self._sessions() as s:
            rows = await s.scalars(select(ApiKey).order_by(ApiKey.created_at))
            return [_info(r) for r in rows]

    async def revoke_key(self, key_id: str) -> KeyInfo:
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = await s.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"No API key with id {key_id!r}.", param="key_id")
            return _info(row)

    async def ensure_master(self, master_key: str | None) -> str | None:
        """Make sure an admin key exists. Returns a newly generated key (to show once),
        or None when ``master_key`` was given or an admin key already existed."""
        if master_key:
            if await self.lookup(hash_key(master_key)) is None:
                await self.create_key(MASTER_KEY_NAME, role="admin", key=master_key)
            return None
        async with self._sessions() as s:
            existing = await s.scalar(
                select(ApiKey.id).where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
            )
        if existing:
            return None
        return (await self.create_key(MASTER_KEY_NAME, role="admin")).key
