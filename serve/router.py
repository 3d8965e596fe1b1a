"""Which provider answers a public model name, and in what order to fall back.

The router is a plain object hosted inside each gateway replica rather than a deployment
of its own: its work is a dictionary lookup, and a Serve handle hop costs ~2.6 ms p50 on
this hardware (docs/architecture.md), far more than it would ever save.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from forge.config import ModelConfig
from forge.errors import ModelNotFound
from serve.providers.base import Endpoint, ProviderReply, StreamItem


class ProviderClient(Protocol):
    """How the gateway reaches a provider: in-process, or through a Serve handle."""

    async def complete(
        self, endpoint: Endpoint, body: dict[str, Any], public_model: str
    ) -> ProviderReply: ...

    def stream(
        self, endpoint: Endpoint, body: dict[str, Any], public_model: str, include_usage: bool
    ) -> AsyncIterator[StreamItem]: ...

    async def ping(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Target:
    model: ModelConfig
    client: ProviderClient


class Router:
    def __init__(self, models: list[ModelConfig], clients: Mapping[str, ProviderClient]) -> None:
        self._models = {m.name: m for m in models}
        self._clients = dict(clients)
        self._chains = {m.name: self._chain(m) for m in models}

    def _chain(self, model: ModelConfig) -> tuple[Target, ...]:
        names = [model.name, *model.fallbacks]
        return tuple(
            Target(self._models[n], self._clients[self._models[n].provider])
            for n in dict.fromkeys(names)
        )

    @property
    def models(self) -> list[ModelConfig]:
        return list(self._models.values())

    @property
    def clients(self) -> Mapping[str, ProviderClient]:
        return self._clients

    def model(self, name: str) -> ModelConfig:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist or you do not have access to it.",
                param="model",
            )
        return model

    def targets(self, name: str) -> tuple[Target, ...]:
        """The model's own target first, then its fallbacks; 404 for unknown names."""
        self.model(name)
        return self._chains[name]
