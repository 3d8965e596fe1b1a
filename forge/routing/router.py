"""Which targets may answer a public model name: its route.

A plain model's route is the model, then its fallbacks, in that order; a model group's
(``routing.groups``) is its targets with their weights and priorities, which the planner
(``forge.routing.planner``) orders per request by the group's strategy. Either way a
route is one shape, so retries, breakers and fallbacks treat them alike.

The router is a plain object hosted inside each gateway replica rather than a deployment
of its own: its work is a dictionary lookup, and a Serve handle hop costs ~2.6 ms p50 on
this hardware (docs/architecture.md), far more than it would ever save.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from forge.adapters import AdapterMismatch, AdapterNotFound, VisibleLookup, adapter_ref
from forge.config import Experiment, ModelConfig, ModelGroup, Strategy
from forge.errors import InvalidRequest, ModelNotFound
from forge.protocol.exchange import Endpoint, ProviderReply, StreamItem


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
    weight: float = 1.0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Route:
    """``name``: the public name the request resolved to (a model, a group, an adapter);
    ``targets``: who may answer, in configured order; ``group``: whether it is a model
    group (whose targets are peers, not a model and its stand-ins)."""

    name: str
    targets: tuple[Target, ...]
    strategy: Strategy = "priority"
    group: bool = False
    larger: tuple[Target, ...] = ()  # context_window_fallbacks: for prompts too long here
    note: str = ""  # why these targets (auto's classification), for x-forge-route

    @property
    def primary(self) -> Target:
        return self.targets[0]


class Router:
    def __init__(
        self,
        models: list[ModelConfig],
        clients: Mapping[str, ProviderClient],
        adapters: VisibleLookup | None = None,
        groups: list[ModelGroup] | None = None,
        experiments: list[Experiment] | None = None,
    ) -> None:
        self._models = {m.name: m for m in models}
        self._clients = dict(clients)
        self._routes = {m.name: self._chain(m) for m in models}
        for group in groups or ():
            self._routes[group.name] = self._group(group)
        self._adapters = adapters
        self._experiments = {e.name: e for e in experiments or ()}

    def experiment(self, name: str) -> Experiment | None:
        """The A/B experiment behind ``name``, if it is one (its arms name routes)."""
        return self._experiments.get(name)

    @property
    def experiments(self) -> list[Experiment]:
        return list(self._experiments.values())

    def _target(self, name: str, weight: float = 1.0, priority: int = 0) -> Target:
        model = self._models[name]
        return Target(model, self._clients[model.provider], weight, priority)

    def _chain(self, model: ModelConfig) -> Route:
        names = dict.fromkeys([model.name, *model.fallbacks])
        targets = tuple(self._target(n, priority=i) for i, n in enumerate(names))
        return Route(model.name, targets, larger=self._larger(targets))

    def _group(self, group: ModelGroup) -> Route:
        targets = tuple(self._target(t.model, t.weight, t.priority) for t in group.targets)
        return Route(group.name, targets, group.strategy, group=True, larger=self._larger(targets))

    def _larger(self, targets: tuple[Target, ...]) -> tuple[Target, ...]:
        """The targets' context_window_fallbacks, in order, that are not targets already."""
        own = {t.model.name for t in targets}
        names = dict.fromkeys(n for t in targets for n in t.model.context_window_fallbacks)
        return tuple(
            self._target(n, priority=len(targets) + i)
            for i, n in enumerate(n for n in names if n not in own)
        )

    @property
    def providers(self) -> frozenset[str]:
        return frozenset(self._clients)

    @property
    def groups(self) -> list[Route]:
        return [r for r in self._routes.values() if r.group]

    @property
    def models(self) -> list[ModelConfig]:
        return list(self._models.values())

    @property
    def clients(self) -> Mapping[str, ProviderClient]:
        return self._clients

    def model(self, name: str) -> ModelConfig:
        """A model's configuration (a group's: its first target's); 404 for unknown names."""
        model = self._models.get(name)
        if model is None and name in self._routes:
            return self._routes[name].primary.model
        if model is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist or you do not have access to it.",
                param="model",
            )
        return model

    def route(self, name: str) -> Route:
        """A model's or group's route; 404 for unknown names."""
        self.model(name)
        return self._routes[name]

    def targets(self, name: str) -> tuple[Target, ...]:
        """The route's targets in configured order (a model's own first, then its
        fallbacks); 404 for unknown names."""
        return self.route(name).targets

    async def resolve(
        self, name: str, org_id: str | None = None, project_id: str | None = None
    ) -> Route:
        """``route``, plus LoRA adapters: ``<base>:<adapter>`` or an adapter's own name,
        as the caller's project sees them (its own, its organisation's, the platform's;
        ``org_id`` None: the platform's only).

        An adapter request goes to its base model's provider, through the view of it that
        names the adapter (Serve routes it to a replica holding it), without fallbacks:
        another model would not answer as the adapter does."""
        route = self._routes.get(name)
        if route is not None:
            return route
        base_name, sep, adapter = name.rpartition(":")  # adapter names hold no ':'
        if not sep or name.startswith("ft:"):  # a fine-tuned model's name: all of it
            base_name, sep, adapter = "", "", name
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
        return Route(name, (Target(model, with_adapter(adapter_ref(spec))),))
