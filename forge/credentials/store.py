"""A project's provider credentials (bring your own key) in the database, sealed.

The gateway never caches a plaintext key: verified keys carry their project's sealed
values (``sealed_for``), and the relay opens the one it needs for the request at hand.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.credentials.sealing import Keyring
from forge.db.schema import ProviderCredential, utcnow
from forge.errors import NotFound
from forge.tenancy.objects import Page, unix
from forge.tenancy.paging import as_page, page_rows
from forge.tenancy.store import new_id, project_of

MAX_KEY_CHARS = 4096


def context_of(project_id: str, provider: str) -> str:
    """What a sealed credential is bound to: it opens only as this project's key for
    this provider."""
    return f"provider_credential:{project_id}:{provider}"


def redact(api_key: str) -> str:
    """Enough to recognise a key by, never enough to use it."""
    if len(api_key) < 12:
        return "***"
    return f"{api_key[:3]}...{api_key[-4:]}"


class CredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str = Field(min_length=1, max_length=100)
    api_key: str = Field(min_length=1, max_length=MAX_KEY_CHARS)


class ProviderCredentialObject(BaseModel):
    object: Literal["organization.project.provider_credential"] = (
        "organization.project.provider_credential"
    )
    id: str
    provider: str
    redacted_value: str
    created_at: int
    updated_at: int


class CredentialDeleted(BaseModel):
    object: Literal["organization.project.provider_credential.deleted"] = (
        "organization.project.provider_credential.deleted"
    )
    id: str
    deleted: bool = True


def _object(row: ProviderCredential) -> ProviderCredentialObject:
    return ProviderCredentialObject(
        id=row.id,
        provider=row.provider,
        redacted_value=row.redacted_value,
        created_at=unix(row.created_at) or 0,
        updated_at=unix(row.updated_at) or 0,
    )


async def sealed_credentials(
    sessions: async_sessionmaker[AsyncSession], project_id: str
) -> dict[str, str]:
    """provider name → sealed key, for the project's verified keys to carry (no keyring
    needed: the directory never sees a plaintext key)."""
    async with sessions() as s:
        rows = await s.execute(
            select(ProviderCredential.provider, ProviderCredential.sealed).where(
                ProviderCredential.project_id == project_id
            )
        )
        return {provider: sealed for provider, sealed in rows}


class CredentialStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], keyring: Keyring) -> None:
        self._sessions = sessions
        self._keyring = keyring

    async def put(
        self, org_id: str, project_id: str, provider: str, api_key: str
    ) -> ProviderCredentialObject:
        """Set the project's key for ``provider`` (replacing the one it had)."""
        sealed = self._keyring.seal(api_key, context_of(project_id, provider))
        async with self._sessions() as s, s.begin():
            await project_of(s, org_id, project_id, active=True)
            row = await s.scalar(
                select(ProviderCredential).where(
                    ProviderCredential.project_id == project_id,
                    ProviderCredential.provider == provider,
                )
            )
            if row is None:
                row = ProviderCredential(
                    id=new_id("pcred_"), org_id=org_id, project_id=project_id, provider=provider
                )
                s.add(row)
            row.sealed, row.key_id = sealed, self._keyring.current
            row.redacted_value, row.updated_at = redact(api_key), utcnow()
        return _object(row)

    async def list(
        self, org_id: str, project_id: str, limit: int, after: str | None
    ) -> Page[ProviderCredentialObject]:
        async with self._sessions() as s:
            await project_of(s, org_id, project_id)
            rows, more = await page_rows(
                s, ProviderCredential, [ProviderCredential.project_id == project_id], limit, after
            )
        return as_page([_object(r) for r in rows], more)

    async def delete(self, org_id: str, project_id: str, credential_id: str) -> None:
        async with self._sessions() as s, s.begin():
            await project_of(s, org_id, project_id)
            row = await s.scalar(
                select(ProviderCredential).where(
                    ProviderCredential.id == credential_id,
                    ProviderCredential.project_id == project_id,
                )
            )
            if row is None:
                raise NotFound(
                    f"No provider credential with id {credential_id!r}.", param="credential_id"
                )
            await s.delete(row)

    async def reseal(self) -> int:
        """Move every credential sealed under an older key to the current one (key
        rotation); returns how many moved."""
        current = self._keyring.current
        moved = 0
        async with self._sessions() as s, s.begin():
            stale = await s.scalars(
                select(ProviderCredential).where(ProviderCredential.key_id != current)
            )
            for row in stale:
                row.sealed = self._keyring.reseal(
                    row.sealed, context_of(row.project_id, row.provider)
                )
                row.key_id = current
                moved += 1
        return moved
