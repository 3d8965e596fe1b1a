"""Which provider answers a public model name, and in what order to fall back.

The router is a plain object hosted inside each gateway replica rather than a deployment
of its own: its work is a dictionary lookup, and a Serve handle hop costs ~2.6 ms p50 on
this hardware (docs/architecture.md), far more than it would ever save.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from forge.adapters import AdapterMismatch, AdapterNotFound, VisibleLookup, adapter_ref
from forge.config import ModelConfig
from forge.errors import InvalidRequest, ModelNotFound
from serve.providers.base import Endpoint, ProviderReply, StreamItem


class ProviderClient(Protocol):
    """How the gateway reaches a provider: in-process, or through a Serve handle."""

    async def complete(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        *,
        api_key: str | None = None,
    ) -> ProviderReply: ...

    def stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        include_usage: bool,
        *,
        api_key: str | None = None,
    ) -> AsyncIterator[StreamItem]: ...

    async def ping(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Target:
    model: ModelConfig
    client: ProviderClient


class Router:
    def __init__(
        self,
        models: list[ModelConfig],
        clients: Mapping[str, ProviderClient],
        adapters: VisibleLookup | None = None,
    ) -> None:
        self._models = {m.name: m for m in models}
        self._clients = dict(clients)
        self._chains = {m.name: self._chain(m) for m in models}
        self._adapters = adapters

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

    async def resolve(
        self, name: str, org_id: str | None = None, project_id: str | None = None
    ) -> tuple[Target, ...]:
        """``targets``, plus LoRA adapters: ``<base>:<adapter>`` or an adapter's own name,
        as the caller's project sees them (its own, its organisation's, the platform's;
        ``org_id`` None: the platform's only).

        An adapter request goes to its base model's provider, through the view of it that
        names the adapter (Serve routes it to a replica holding it), without fallbacks:
        another model would not answer as the adapter does."""
        chain = self._chains.get(name)
        if chain is not None:
            return chain
        base_name, sep, adapter = name.rpartition(":")  # adapter names hold no ':'
        if not sep:
            base_name, adapter = "", name
        elif base_name not in self._models:
            self.model(base_name)  # 404 for the unknown base
        spec = None
        if self._adapters is not None and adapter:
            spec = await self._adapters(adapter, org_id, project_id)
        if spec is None:
            if sep:
                raise AdapterNotFound(
                    f"The adapter {adapter!r} does not exist for model {base_name!r}.",
                    param="model",
                )
            self.model(name)  # the usual 404
            raise AssertionError("unreachable")
        if sep and spec.base_model != base_name:
            raise AdapterMismatch(
                f"The adapter {adapter!r} belongs to {spec.base_model!r}, not {base_name!r}.",
                param="model",
            )
        base = self.model(spec.base_model)
        with_adapter = getattr(self._clients[base.provider], "with_adapter", None)
        if with_adapter is None:
            raise InvalidRequest(f"The model {base.name!r} serves no adapters.", param="model")
        model = base.model_copy(update={"name": name, "fallbacks": []})
        return (Target(model, with_adapter(adapter_ref(spec))),)
