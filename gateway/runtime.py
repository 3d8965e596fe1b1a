"""Everything a gateway replica's routes use, assembled once per replica."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from actors.usage_shipper import UsageShipper
from forge.adapters import AdapterInfo, AdapterSpec, CachedAdapterLookup
from forge.config import PlatformConfig
from forge.keys import CreatedKey, KeyInfo, Role
from gateway.auth import KeyVerifier
from gateway.drain import Drain, DrainWatcher
from gateway.relay import Relay
from gateway.warm import WarmUp
from serve.router import Router


class Directory(Protocol):
    """The org directory as the admin routes need it (the actor, or the plain class)."""

    async def create_key(self, name: str, role: Role = "user") -> CreatedKey: ...

    async def list_keys(self) -> list[KeyInfo]: ...

    async def revoke_key(self, key_id: str) -> KeyInfo: ...

    async def register_adapter(self, spec: AdapterSpec) -> AdapterInfo: ...

    async def get_adapter(self, name: str) -> AdapterInfo | None: ...

    async def list_adapters(self) -> list[AdapterInfo]: ...

    async def delete_adapter(self, name: str, created_at: datetime | None = None) -> None:
        """Unregister ``name`` (only its registration made at ``created_at``, if given)."""


Readiness = Callable[[], Awaitable[dict[str, bool]]]


@dataclass
class GatewayRuntime:
    """A replica's parts. ``drain_watcher`` (behind Serve) learns of a cluster-wide drain;
    ``warm_up`` (behind Serve) sets up the paths to provider deployments as it starts."""

    config: PlatformConfig
    router: Router
    verifier: KeyVerifier
    shipper: UsageShipper
    directory: Directory
    readiness: Readiness
    adapters: CachedAdapterLookup | None = None
    drain: Drain = field(default_factory=Drain)
    drain_watcher: DrainWatcher | None = None
    warm_up: WarmUp | None = None

    def __post_init__(self) -> None:
        self.relay = Relay(self.router, self.shipper, self.drain)
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False

    def start(self) -> None:
        """Background work of the replica: usage shipping and spool recovery, watching
        for a drain, and the warm-up (in the background: it never holds the start up)."""
        self.shipper.start()
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        if self.drain_watcher is not None:
            self._tasks.append(loop.create_task(self.drain_watcher.run()))
        if self.warm_up is not None:
            self._tasks.append(loop.create_task(self.warm_up.run()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.shipper.close()
        for client in self.router.clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                await close()
