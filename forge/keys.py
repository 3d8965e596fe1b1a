"""API keys: generation, hashing and the store the directory facet and the CLI share."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from forge.budgets.model import Budget
from forge.db.schema import (
    DEFAULT_ORG_ID,
    DEFAULT_PROJECT_ID,
    ApiKey,
    ModelPermission,
    Organization,
    Project,
    aware,
    utcnow,
)
from forge.errors import NotFound
from forge.key_scope import checked, stored
from forge.limits.rules import LimitRule
from forge.tenancy.policy import ModelPolicy

KEY_PREFIX = "sk-forge-"
MASTER_KEY_NAME = "master"
Role = Literal["platform", "admin", "user"]
OwnerType = Literal["user", "service_account"]


class KeyInfo(BaseModel):
    """What a gateway needs to know about a verified key (never the key itself): who it
    is, whose (organisation and project), and whether those still let it in."""

    id: str
    name: str
    prefix: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None
    org_id: str = DEFAULT_ORG_ID
    project_id: str = DEFAULT_PROJECT_ID
    owner_type: OwnerType | None = None
    owner_id: str | None = None
    expires_at: datetime | None = None
    org_status: str = "active"  # of its organisation at lookup: active, suspended, deleted
    project_status: str = "active"  # of its project: active, archived
    plan: str | None = None  # its organisation's, at lookup
    limits: list[LimitRule] = []  # the rate-limit rules it is under (forge.limits.rules)
    budgets: list[Budget] = []  # the budgets its requests count against (forge.budgets)
    model_policy: ModelPolicy | None = None  # its project's model permissions, if any
    # its project's own provider keys, sealed: provider name → sealed (forge.credentials)
    credentials: dict[str, str] = {}
    allowed_models: list[str] | None = None  # None: every model its project may use
    allowed_endpoints: list[str] | None = None  # None: every endpoint (forge.key_scope)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class CreatedKey(BaseModel):
    info: KeyInfo
    key: str


def person_of(key: KeyInfo) -> str | None:
    """The user a key acts for, if a person owns it (keys it makes are theirs too)."""
    return key.owner_id if key.owner_type == "user" else None


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 is right here: keys carry 256 random bits, so no slow KDF is needed,
    and verification stays a single hash on the hot path."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key_id() -> str:
    return "key_" + uuid.uuid4().hex[:24]


def redacted(prefix: str) -> str:
    """A key as lists show it: its visible prefix, the rest hidden."""
    return f"{prefix}...****"


def _info(
    row: ApiKey,
    org_status: str | None = "active",
    project_status: str | None = None,
    plan: str | None = None,
    policy_mode: str | None = None,
    policy_models: str | None = None,
) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        role=row.role,  # type: ignore[arg-type]
        created_at=aware(row.created_at),
        revoked_at=aware(row.revoked_at),
        org_id=row.org_id,
        project_id=row.project_id,
        owner_type=row.owner_type,  # type: ignore[arg-type]
        owner_id=row.owner_id,
        expires_at=aware(row.expires_at),
        org_status=org_status or "deleted",
        project_status=project_status or "active",
        plan=plan,
        model_policy=ModelPolicy.stored(policy_mode, policy_models),
        allowed_models=stored(row.allowed_models),
        allowed_endpoints=stored(row.allowed_endpoints),
    )


class KeyStore:
    """Durable key records."""

    def __init__(self, sessions: async_sessionmaker) -> None:
        self._sessions = sessions

    async def create_key(
        self,
        name: str,
        role: Role = "user",
        key: str | None = None,
        *,
        org_id: str = DEFAULT_ORG_ID,
        project_id: str = DEFAULT_PROJECT_ID,
        owner_type: OwnerType | None = None,
        owner_id: str | None = None,
        expires_at: datetime | None = None,
        allowed_models: list[str] | None = None,
        allowed_endpoints: list[str] | None = None,
    ) -> CreatedKey:
        """A new key of ``project_id`` in ``org_id`` (the caller checked both exist),
        restricted to ``allowed_models`` and ``allowed_endpoints`` when given."""
        models, endpoints = checked(allowed_models, allowed_endpoints)
        key = key or generate_key()
        row = ApiKey(
            id=new_key_id(),
            name=name,
            key_hash=hash_key(key),
            prefix=key[: len(KEY_PREFIX) + 4],
            role=role,
            created_at=utcnow(),
            org_id=org_id,
            project_id=project_id,
            owner_type=owner_type,
            owner_id=owner_id,
            expires_at=expires_at,
            allowed_models=models,
            allowed_endpoints=endpoints,
        )
        async with self._sessions() as s, s.begin():
            s.add(row)
        return CreatedKey(info=_info(row), key=key)

    async def lookup(self, key_hash: str) -> KeyInfo | None:
        """The key with this hash, with its organisation's and project's status (one
        query: the hot path's only database read, on a cache miss)."""
        query = (
            select(
                ApiKey,
                Organization.status,
                Project.status,
                Organization.plan,
                ModelPermission.mode,
                ModelPermission.model_ids,
            )
            .outerjoin(Organization, Organization.id == ApiKey.org_id)
            .outerjoin(Project, Project.id == ApiKey.project_id)
            .outerjoin(ModelPermission, ModelPermission.project_id == ApiKey.project_id)
            .where(ApiKey.key_hash == key_hash)
        )
        async with self._sessions() as s:
            found = (await s.execute(query)).first()
        return _info(*found) if found else None

    async def list_keys(self, org_id: str | None = None) -> list[KeyInfo]:
        """Every key of ``org_id`` (None: of every organisation), oldest first."""
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if org_id is not None:
            query = query.where(ApiKey.org_id == org_id)
        async with self._sessions() as s:
            return [_info(r) for r in await s.scalars(query)]

    async def revoke_key(self, key_id: str, org_id: str | None = None) -> KeyInfo:
        """Revoke a key of ``org_id`` (None: of any organisation); 404 for another's."""
        scope = [ApiKey.id == key_id]
        if org_id is not None:
            scope.append(ApiKey.org_id == org_id)
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(ApiKey)
                .where(*scope, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            row = await s.scalar(select(ApiKey).where(*scope))
            if row is None:
                raise NotFound(f"No API key with id {key_id!r}.", param="key_id")
            return _info(row)

    async def ensure_master(self, master_key: str | None) -> str | None:
        """Make sure a platform (operator) key exists. Returns a newly generated key (to
        show once), or None when ``master_key`` was given or one already existed."""
        if master_key:
            if await self.lookup(hash_key(master_key)) is None:
                await self.create_key(MASTER_KEY_NAME, role="platform", key=master_key)
            return None
        async with self._sessions() as s:
            existing = await s.scalar(
                select(ApiKey.id).where(ApiKey.role == "platform", ApiKey.revoked_at.is_(None))
            )
        if existing:
            return None
        return (await self.create_key(MASTER_KEY_NAME, role="platform")).key
