"""The org directory as one plain object: keys and adapters, over the database.

The control plane's directory facet (actors/directory.py) wraps it; in-process tests
use it directly.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import async_sessionmaker

from forge.adapters import AdapterInfo, AdapterRegistry, AdapterSpec
from forge.budgets.store import BudgetStore
from forge.credentials.store import sealed_credentials
from forge.db.schema import DEFAULT_ORG_ID, DEFAULT_PROJECT_ID
from forge.key_changes import ChangeFeed, KeyChanges
from forge.keys import CreatedKey, KeyInfo, KeyStore, Role
from forge.limits.store import RateLimitStore


class Directory:
    def __init__(self, sessions: async_sessionmaker) -> None:
        self.keys = KeyStore(sessions)
        self.adapters = AdapterRegistry(sessions)
        self.limits = RateLimitStore(sessions)
        self.budgets = BudgetStore(sessions)
        self._sessions = sessions
        self.key_feed = ChangeFeed()

    async def announce_key_changes(self, key_ids: list[str] | None) -> int:
        """Keys changed (revoked; None: their organisation or project did): every
        replica's watcher hears it at once (``gateway.key_changes``)."""
        return self.key_feed.publish(key_ids)

    async def key_changes(self, feed_id: str | None, epoch: int, timeout_s: float) -> KeyChanges:
        return await self.key_feed.since(feed_id, epoch, timeout_s)

    async def verify(self, key_hash: str) -> KeyInfo | None:
        """The key with its rate-limit rules and budgets (none for the operator's)."""
        info = await self.keys.lookup(key_hash)
        if info is not None and info.role != "platform" and info.active:
            info.limits = await self.limits.rules_for_key(info.org_id, info.project_id, info.id)
            info.budgets = await self.budgets.for_key(
                info.org_id, info.project_id, info.id, info.plan
            )
            info.credentials = await sealed_credentials(self._sessions, info.project_id)
        return info

    async def create_key(
        self,
        name: str,
        role: Role = "user",
        *,
        org_id: str = DEFAULT_ORG_ID,
        project_id: str = DEFAULT_PROJECT_ID,
        owner_user_id: str | None = None,
        allowed_models: list[str] | None = None,
        allowed_endpoints: list[str] | None = None,
    ) -> CreatedKey:
        return await self.keys.create_key(
            name,
            role,
            org_id=org_id,
            project_id=project_id,
            owner_type="user" if owner_user_id else None,
            owner_id=owner_user_id,
            allowed_models=allowed_models,
            allowed_endpoints=allowed_endpoints,
        )

    async def list_keys(self, org_id: str | None = None) -> list[KeyInfo]:
        return await self.keys.list_keys(org_id)

    async def revoke_key(self, key_id: str, org_id: str | None = None) -> KeyInfo:
        return await self.keys.revoke_key(key_id, org_id)

    async def register_adapter(self, spec: AdapterSpec) -> AdapterInfo:
        return await self.adapters.register(spec)

    async def get_adapter(self, name: str) -> AdapterInfo | None:
        return await self.adapters.get(name)

    async def list_adapters(self) -> list[AdapterInfo]:
        return await self.adapters.list()

    async def visible_adapter(
        self, alias: str, org_id: str | None, project_id: str | None
    ) -> AdapterInfo | None:
        return await self.adapters.visible(alias, org_id, project_id)

    async def visible_adapters(
        self, org_id: str | None, project_id: str | None, whole_org: bool = False
    ) -> list[AdapterInfo]:
        return await self.adapters.list_visible(org_id, project_id, whole_org=whole_org)

    async def owned_adapter(
        self, alias: str, org_id: str | None, project_id: str | None
    ) -> AdapterInfo | None:
        return await self.adapters.owned(alias, org_id, project_id)

    async def delete_adapter(self, name: str, created_at: datetime | None = None) -> None:
        await self.adapters.delete(name, created_at)
