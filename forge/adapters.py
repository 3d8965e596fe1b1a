"""The LoRA adapter registry: which adapters exist, for which base model, from where.

The database is the truth (so every replica, and a restarted one, can find an adapter by
name); replicas load what they are asked for into their own LRU (serve.models.adapters).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from forge.db.schema import LoraAdapter
from forge.errors import Conflict, InvalidRequest, NotFound
from forge.ttl_cache import TtlCache


class AdapterNotFound(NotFound):
    default_code = "adapter_not_found"


class AdapterMismatch(InvalidRequest):
    default_code = "adapter_base_mismatch"


class AdapterSpec(BaseModel):
    """An adapter: its name, the base model it belongs to, where it lives; and, once
    registered, when (which tells a registration apart from an earlier one of the same
    name and source, whose files may since have changed)."""

    name: str = Field(
        pattern=r"^(ft:[\w.:-]+|[\w.-]+)$",
        max_length=200,
        description="Alias clients use (a fine-tuned model's: its ``ft:`` name).",
    )
    base_model: str = Field(description="Public name of the self-hosted base model.")
    source: str = Field(
        min_length=1,
        max_length=2000,
        description="Local directory or fsspec URL (s3://, gs://, https://, ...) of a PEFT "
        "LoRA adapter; credentials come from the environment, never the URL.",
    )

    created_at: datetime | None = Field(None, description="When it was registered.")
    alias: str | None = Field(
        None, description="What clients call it (default: its name, the registry's key)."
    )
    org_id: str | None = Field(None, description="Its organisation; null: the platform's.")
    project_id: str | None = Field(
        None, description="The one project that may use it; null: its whole organisation."
    )

    @property
    def public_name(self) -> str:
        return self.alias or self.name

    @field_validator("source")
    @classmethod
    def _no_credentials(cls, source: str) -> str:
        if "://" in source and (urlsplit(source).password or urlsplit(source).username):
            raise ValueError("put credentials in the environment, not in the adapter URL")
        return source


def source_digest(source: str) -> str:
    """Short digest of an adapter's source (the version of an unregistered spec)."""
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def adapter_version(spec: AdapterSpec) -> str:
    """Short digest of an adapter's source and registration time: part of its reference,
    so that a name registered again, from elsewhere or from the same place after a
    delete, is a different model to Serve's multiplexing and to every replica's cache."""
    if spec.created_at is None:
        return source_digest(spec.source)
    return source_digest(f"{spec.source}\n{spec.created_at.isoformat()}")


def adapter_ref(spec: AdapterSpec) -> str:
    """``name@version``: what the gateway asks a model replica for."""
    return f"{spec.name}@{adapter_version(spec)}"


def parse_adapter_ref(ref: str) -> tuple[str, str | None]:
    """(name, version or None) from ``adapter_ref`` or a bare name."""
    name, _, digest = ref.partition("@")
    return name, digest or None


class AdapterInfo(AdapterSpec):
    created_at: datetime


def _visible_to(org_id: str | None, project_id: str | None) -> ColumnElement[bool]:
    """The adapters a project's requests may name: the platform's, its organisation's,
    its own."""
    platform = LoraAdapter.org_id.is_(None)
    if org_id is None:
        return platform
    mine = and_(
        LoraAdapter.org_id == org_id,
        or_(LoraAdapter.project_id.is_(None), LoraAdapter.project_id == project_id),
    )
    return or_(platform, mine)


def _specificity(row: LoraAdapter) -> int:
    """A project's adapter shadows its organisation's, which shadows the platform's."""
    return (row.org_id is not None) + (row.project_id is not None)


class AdapterRegistry:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self._sessions = sessions

    async def register(self, spec: AdapterSpec) -> AdapterInfo:
        """Add ``spec`` under its alias in its owner's scope; the same spec again is a
        no-op, a different one with the alias in that scope a 409. Its key (``name``) is
        the alias when no other registration has it, else made unique."""
        alias = spec.public_name
        async with self._sessions.begin() as session:
            row = await session.scalar(_in_scope(alias, spec.org_id, spec.project_id))
            if row is not None:
                if (row.base_model, row.source) != (spec.base_model, spec.source):
                    raise Conflict(
                        f"An adapter named {alias!r} already exists with another base "
                        "model or source; delete it first.",
                        param="name",
                    )
                return _info(row)
            key = alias
            if await session.get(LoraAdapter, key) is not None:
                key = f"{alias[:80]}--{secrets.token_hex(4)}"
            row = LoraAdapter(
                name=key,
                alias=alias,
                org_id=spec.org_id,
                project_id=spec.project_id,
                base_model=spec.base_model,
                source=spec.source,
            )
            session.add(row)
            await session.flush()
            return _info(row)

    async def visible(
        self, alias: str, org_id: str | None, project_id: str | None
    ) -> AdapterInfo | None:
        """The adapter ``alias`` names for a request of ``project_id`` in ``org_id``."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(LoraAdapter).where(
                    LoraAdapter.alias == alias, _visible_to(org_id, project_id)
                )
            )
            best = max(rows, key=_specificity, default=None)
            return None if best is None else _info(best)

    async def list_visible(
        self, org_id: str | None, project_id: str | None, *, whole_org: bool = False
    ) -> list[AdapterInfo]:
        """What ``project_id``'s requests may name (``whole_org``: any project's of
        ``org_id``, for its admins), shadowed ones left out."""
        where = (
            or_(LoraAdapter.org_id.is_(None), LoraAdapter.org_id == org_id)
            if whole_org
            else _visible_to(org_id, project_id)
        )
        async with self._sessions() as session:
            rows = list(await session.scalars(select(LoraAdapter).where(where)))
        if whole_org:
            return sorted((_info(r) for r in rows), key=lambda a: (a.public_name, a.name))
        best: dict[str, LoraAdapter] = {}
        for row in rows:
            if row.alias not in best or _specificity(row) > _specificity(best[row.alias]):
                best[row.alias] = row
        return [_info(best[alias]) for alias in sorted(best)]

    async def owned(
        self, alias: str, org_id: str | None, project_id: str | None
    ) -> AdapterInfo | None:
        """The adapter ``alias`` registered in exactly this scope (for its admin)."""
        async with self._sessions() as session:
            row = await session.scalar(_in_scope(alias, org_id, project_id))
            return None if row is None else _info(row)

    async def get(self, name: str) -> AdapterInfo | None:
        async with self._sessions() as session:
            row = await session.get(LoraAdapter, name)
            return None if row is None else _info(row)

    async def list(self) -> list[AdapterInfo]:
        async with self._sessions() as session:
            rows = await session.scalars(select(LoraAdapter).order_by(LoraAdapter.name))
            return [_info(r) for r in rows]

    async def delete(self, name: str, created_at: datetime | None = None) -> None:
        """Unregister ``name``; with ``created_at``, only that registration of it (a
        failed admin load takes back its own, not one made since)."""
        async with self._sessions.begin() as session:
            row = await session.get(LoraAdapter, name)
            if row is None or (created_at is not None and _info(row).created_at != created_at):
                raise AdapterNotFound(f"The adapter {name!r} does not exist.", param="name")
            await session.delete(row)


def _info(row: LoraAdapter) -> AdapterInfo:
    created = row.created_at
    if created.tzinfo is None:  # SQLite keeps no zone; every stored time is UTC
        created = created.replace(tzinfo=UTC)
    return AdapterInfo(
        name=row.name,
        alias=row.alias,
        org_id=row.org_id,
        project_id=row.project_id,
        base_model=row.base_model,
        source=row.source,
        created_at=created,
    )


def _same(column: Any, value: str | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value  # type: ignore[no-any-return]


def _in_scope(alias: str, org_id: str | None, project_id: str | None) -> Select[Any]:
    """The adapter ``alias`` registered in exactly this scope."""
    return select(LoraAdapter).where(
        LoraAdapter.alias == alias,
        _same(LoraAdapter.org_id, org_id),
        _same(LoraAdapter.project_id, project_id),
    )


AdapterLookup = Callable[[str], Awaitable[AdapterSpec | None]]


class CachedAdapterLookup:
    """A gateway replica's view of the registry: answers (and misses) kept ``ttl_s``, so
    a request naming an adapter costs no actor call on the hot path."""

    def __init__(self, fetch: AdapterLookup, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._cache: TtlCache[str, AdapterSpec | None] = TtlCache(max_entries)

    async def __call__(self, name: str) -> AdapterSpec | None:
        found, spec = self._cache.lookup(name)
        if found:
            return spec
        spec = await self._fetch(name)
        self._cache.put(name, spec, self._ttl_s)
        return spec

    def forget(self, name: str) -> None:
        self._cache.pop(name)


VisibleLookup = Callable[[str, str | None, str | None], Awaitable[AdapterSpec | None]]


class VisibleAdapters:
    """A gateway replica's view of which adapter an alias names for a project (answers
    and misses kept ``ttl_s``, so a request naming an adapter costs no actor call on the
    hot path)."""

    def __init__(self, fetch: VisibleLookup, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._cache: TtlCache[tuple[str, str | None, str | None], AdapterSpec | None] = TtlCache(
            max_entries
        )

    async def __call__(
        self, alias: str, org_id: str | None, project_id: str | None
    ) -> AdapterSpec | None:
        key = (alias, org_id, project_id)
        found, spec = self._cache.lookup(key)
        if found:
            return spec
        spec = await self._fetch(alias, org_id, project_id)
        self._cache.put(key, spec, self._ttl_s)
        return spec

    def forget(self) -> None:
        """After a registration or a deletion here (other replicas follow in ``ttl_s``)."""
        self._cache.clear()
