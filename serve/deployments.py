"""Ray Serve shells: the gateway ingress, the provider proxies, the model servers.
No logic lives here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from actors.control_plane import ControlPlaneActor
from actors.facets import ACTOR_NAMESPACE, CONTROL_PLANE_ACTOR, Facet, FacetHandle
from actors.fine_tuning import FineTuningActor
from actors.remote import lazy_remote, remote
from forge.adapters import (
    AdapterSpec,
    CachedAdapterLookup,
    VisibleAdapters,
    adapter_ref,
    parse_adapter_ref,
)
from forge.audit.store import AuditStore
from forge.batches.store import BatchStore
from forge.budgets.gate import BudgetGate
from forge.budgets.ledger import BudgetLedger
from forge.config import PlatformConfig, ProviderConfig
from forge.credentials.sealing import Keyring
from forge.db.engine import make_sessionmaker, replica_engine
from forge.directory import Directory
from forge.files.store import FileStore
from forge.finetune.manager import JobManager
from forge.finetune.store import JobStore
from forge.limits.admission import Admission
from forge.limits.concurrency import ConcurrencyLeases
from forge.limits.lease import LeasedAdmission
from forge.limits.limiter import RateLimiter
from forge.people.store import PeopleStore
from forge.protocol.exchange import Endpoint, ProviderReply, StreamItem
from forge.responses_store import ResponseStore
from forge.routing.breakers import BreakerBoard
from forge.routing.router import ProviderClient, Router
from forge.settings import Settings
from forge.tenancy.store import TenancyStore
from forge.tracing_spans import continued
from forge.webhooks.store import WebhookStore
from gateway.app import build_app
from gateway.auth import KeyVerifier
from gateway.breaker_watch import BreakerSharing
from gateway.drain import DrainWatcher
from gateway.errors import answered_errors
from gateway.key_changes import KeyChangeWatcher
from gateway.metrics import MetricsSources
from gateway.runtime import GatewayRuntime
from gateway.usage_shipper import UsageShipper
from gateway.usage_spool import UsageSpool
from gateway.warm import NO_KEY_DIGEST, WarmUp, provider_warm_calls
from serve.handles import HandleProviderClient
from serve.models.adapters import AdapterCache
from serve.models.engine import EngineStats
from serve.providers.registry import make_provider
from train.ray_trainer import RayTrainLauncher

log = logging.getLogger(__name__)

FINE_TUNING_ACTOR = "forge-fine-tuning"
READY_TIMEOUT_S = 3.0
PRUNE_TIMEOUT_S = 30.0  # a slow directory must not pile up prunes


def open_spool() -> UsageSpool:
    """This replica's usage spool, beside those of the other replicas on this node."""
    spool = UsageSpool(Settings().data_dir.resolve() / "spool")
    spool.open()
    return spool


def named_actor(actor: Any, name: str, *args: Any) -> Any:
    """The platform's actor ``name``, created on first use and shared by every replica.
    Detached, so that a gateway replica's restart does not take it along."""
    return actor.options(
        name=name, namespace=ACTOR_NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(*args)


def fine_tuning_manager(config: PlatformConfig) -> JobManager:
    """The job manager actor's client; the actor is made on the first call."""
    root = config.fine_tuning.storage or str(Settings().data_dir / "fine_tuning")
    launcher = RayTrainLauncher(str((Path(root) / "ray").resolve()))
    return lazy_remote(
        lambda: named_actor(FineTuningActor, FINE_TUNING_ACTOR, config, launcher), JobManager
    )


async def wake_fine_tuning(jobs: JobStore, manager: JobManager) -> None:
    """At a replica's start: when jobs are unfinished (the manager died, or the whole
    platform restarted), make sure the manager is up, which resumes them."""
    if await jobs.with_status("validating_files", "queued", "running"):
        await manager.schedule()


def platform_facet(facet: Facet) -> FacetHandle:
    """``facet`` of the control-plane actor (actors/control_plane.py), which the first
    caller creates."""
    return FacetHandle(named_actor(ControlPlaneActor, CONTROL_PLANE_ACTOR), facet)


@serve.deployment
class ProviderDeployment:
    def __init__(self, cfg: ProviderConfig) -> None:
        self.provider = make_provider(cfg)
        self._report: Any = None
        if hasattr(self.provider, "stats"):  # a self-hosted embedding model: `forge status`
            directory = platform_facet("directory")
            replica = serve.get_replica_context().replica_id.unique_id
            self._report = lambda stats: directory.report_replica.remote(replica, stats)

    async def complete(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        api_key: str | None = None,
        trace: dict[str, str] | None = None,
    ) -> ProviderReply:
        keyed = {} if api_key is None else {"api_key": api_key}
        with continued(trace):
            return await self.provider.complete(endpoint, body, public_model, **keyed)

    async def stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        include_usage: bool,
        api_key: str | None = None,
        trace: dict[str, str] | None = None,
    ) -> AsyncIterator[StreamItem]:
        keyed = {} if api_key is None else {"api_key": api_key}
        source = self.provider.stream(endpoint, body, public_model, include_usage, **keyed)
        with continued(trace):  # the upstream request goes out before the first item
            first = await anext(source)
        yield first
        async for item in source:
            yield item

    async def ping(self) -> bool:
        return await self.provider.ping()

    async def warm(self) -> bool:
        """The gateway's start-up call through its handle (gateway/warm.py): answered
        here, never sent upstream."""
        return True

    def check_health(self) -> None:
        """Serve's periodic health check: a provider that can tell it is broken (a model
        engine whose loop died) gets its replica replaced."""
        if self._report is not None:
            self._report({"provider": self.provider.name, **self.provider.stats().model_dump()})
        healthy = getattr(self.provider, "healthy", None)
        if healthy is not None and not healthy():
            raise RuntimeError(f"provider {self.provider.name!r} is unhealthy")


class _HeldAdapter:
    """What Serve's multiplexer holds per adapter. Serve awaits ``__del__`` when it drops
    the adapter from its LRU; set on the instance, so garbage collection never calls it."""

    def __init__(self, adapters: AdapterCache, ref: str) -> None:
        async def evict() -> None:
            await adapters.evict(*parse_adapter_ref(ref))  # that copy only

        self.__del__ = evict


@serve.deployment
class ModelServerDeployment:
    """A self-hosted generative model. Serve's model multiplexing routes a request that
    names a LoRA adapter to a replica already holding it; the replica's ``AdapterCache``
    (same capacity) loads on first use and evicts what Serve drops."""

    def __init__(self, cfg: ProviderConfig) -> None:
        directory = platform_facet("directory")
        self._directory = directory
        self.provider = make_provider(cfg, adapter_lookup=lambda n: directory.get_adapter.remote(n))
        self._replica = serve.get_replica_context().replica_id.unique_id
        adapters = self.provider.adapters

        async def hold(ref: str) -> _HeldAdapter:  # ref: name@digest of its source
            name, version = parse_adapter_ref(ref)
            await adapters.ensure(name, version=version)
            return _HeldAdapter(adapters, ref)

        # A plain function: Serve keeps its multiplexer as an attribute of what it wraps.
        self._hold = serve.multiplexed(max_num_models_per_replica=max(cfg.max_adapters, 1))(hold)
        self._pruning: asyncio.Task[None] | None = None

    async def _adapter(self) -> str | None:
        adapter = serve.get_multiplexed_model_id() or None
        if adapter is not None:
            await self._hold(adapter)
        return adapter

    async def complete(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        trace: dict[str, str] | None = None,  # nothing upstream to carry it to
    ) -> ProviderReply:
        adapter = await self._adapter()
        return await self.provider.complete(endpoint, body, public_model, adapter)

    async def stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        public_model: str,
        include_usage: bool,
        trace: dict[str, str] | None = None,  # nothing upstream to carry it to
    ) -> AsyncIterator[StreamItem]:
        adapter = await self._adapter()
        async for item in self.provider.stream(
            endpoint, body, public_model, include_usage, adapter
        ):
            yield item

    async def load_adapter(self, spec: AdapterSpec) -> list[str]:
        await self.provider.load_adapter(spec)
        await self._hold(adapter_ref(spec))  # so that Serve routes its requests here
        return self.provider.adapters.loaded()

    async def ping(self) -> bool:
        return await self.provider.ping()

    async def warm(self) -> bool:
        """The gateway's start-up call through its handle (gateway/warm.py): answered
        here, without the engine."""
        return True

    def stats(self) -> EngineStats:
        """This replica's engine: requests running and queued, adapters loaded."""
        return self.provider.stats()

    async def check_health(self) -> None:
        """Serve's periodic check: a dead engine fails it and Serve replaces the replica.
        Also reports this replica's stats for `forge status` and, in the background (the
        directory's speed must not decide this replica's health), unloads adapters that
        were deleted from the registry."""
        stats = self.provider.stats()
        self._directory.report_replica.remote(
            self._replica, {"provider": self.provider.name, **stats.model_dump()}
        )
        if stats.adapters and (self._pruning is None or self._pruning.done()):
            self._pruning = asyncio.create_task(self._prune_adapters())
        if not self.provider.healthy():
            raise RuntimeError(f"model server {self.provider.name!r} is unhealthy")

    async def _prune_adapters(self) -> None:
        try:
            stale = await asyncio.wait_for(self.provider.adapters.prune(), PRUNE_TIMEOUT_S)
        except Exception as exc:  # the directory restarting: the next check tries again
            log.warning("adapter prune failed: %s", type(exc).__name__)
            return
        if stale:
            log.info("unloaded adapters deleted from the registry: %s", ", ".join(stale))


@serve.deployment
@serve.ingress()
class GatewayDeployment:
    def __init__(self, config: PlatformConfig, providers: dict[str, DeploymentHandle]) -> None:
        directory, recorder = platform_facet("directory"), platform_facet("usage")
        # soft state (a restart starts its buckets full) / state in the database
        limiter = remote(platform_facet("limits"), RateLimiter)
        ledger = remote(platform_facet("budgets"), BudgetLedger)
        board = remote(platform_facet("limits"), BreakerBoard)
        keyring = Keyring.of(Settings())
        database = replica_engine(Settings().resolved_database_url(), config.responses.pool_size)
        fine_tuning, jobs = fine_tuning_manager(config), JobStore(make_sessionmaker(database))
        clients: dict[str, ProviderClient] = {
            name: HandleProviderClient(h) for name, h in providers.items()
        }
        adapters = CachedAdapterLookup(
            lambda name: directory.get_adapter.remote(name), ttl_s=config.gateway.auth_cache_ttl_s
        )
        visible = VisibleAdapters(
            lambda alias, org, project: directory.visible_adapter.remote(alias, org, project),
            ttl_s=config.gateway.auth_cache_ttl_s,
        )
        for cfg in config.providers:
            if cfg.placement == "gateway":
                clients[cfg.name] = make_provider(cfg, adapter_lookup=adapters)
        replica = serve.get_replica_context().replica_id.unique_id
        self._report = lambda stats: directory.report_replica.remote(
            replica, {"gateway": True, **stats}
        )
        # A model that scales to zero is left alone until a request needs it.
        asleep = {cfg.name for cfg in config.providers if cfg.scales_to_zero}
        awake = {n: c for n, c in clients.items() if n not in asleep}
        self._pings = {f"provider:{n}": c.ping for n, c in awake.items()}
        self._pings["actor:directory"] = lambda: directory.ping.remote()
        self._pings["actor:usage-recorder"] = lambda: recorder.ping.remote()
        shipper = UsageShipper(
            lambda batch: recorder.record.remote(batch),
            spool=open_spool() if config.usage.spool else None,
            flush_interval_s=config.usage.flush_interval_s,
            max_batch=config.usage.max_batch,
            unready_after_s=config.usage.unready_after_s,
        )
        self.runtime = GatewayRuntime(
            config=config,
            router=Router(
                config.models,
                clients,
                visible,
                config.routing.groups,
                config.routing.experiments,
            ),
            verifier=KeyVerifier(
                lambda digest: directory.verify.remote(digest),
                ttl_s=config.gateway.auth_cache_ttl_s,
            ),
            shipper=shipper,
            directory=remote(directory, Directory),
            readiness=self.readiness,
            adapters=adapters,
            visible_adapters=visible,
            # this replica's own small pool on the platform's database, no actor between
            # (docs/architecture.md, "Stored responses")
            responses=ResponseStore.on(database, config.responses),
            files=FileStore.on(make_sessionmaker(database), config.files, Settings().data_dir),
            fine_tuning=fine_tuning,
            fine_tuning_jobs=jobs,
            batches=BatchStore(
                make_sessionmaker(database),
                FileStore.on(make_sessionmaker(database), config.files, Settings().data_dir),
                claim_s=config.batches.claim_s,
                emit=WebhookStore(make_sessionmaker(database), keyring).emit,
            ),
            tenancy=TenancyStore(make_sessionmaker(database)),
            people=PeopleStore(make_sessionmaker(database)),
            keyring=keyring,
            webhooks=WebhookStore(make_sessionmaker(database), keyring),
            database=database,
            audit=AuditStore(make_sessionmaker(database)),
            budgets=BudgetGate(
                ledger.reserve,
                ledger.release,
                shipper.flush,  # a hold goes back once its requests' records are written
                config.gateway.replicas,
                expire=ledger.expire,
            ),
            breaker_sharing=BreakerSharing(board),
            metrics=MetricsSources(
                usage=lambda: recorder.metrics.remote(),
                breakers=lambda: board.breakers_since(None, 0, 0),
                replicas=lambda: directory.replica_stats.remote(),
            ),
            admission=Admission(
                LeasedAdmission(limiter.grant, limiter.give_back, config.gateway.replicas),
                ConcurrencyLeases(limiter.acquire, limiter.release, limiter.report, replica),
            ),
        )
        # Set up, before any request needs them: the path to each provider deployment,
        # and the directory's key lookup (this replica's first actor call, the directory's
        # first database query) with a digest no key has.
        warm_calls = provider_warm_calls(awake)
        warm_calls["actor:directory"] = lambda: directory.verify.remote(NO_KEY_DIGEST)
        warm_calls["actor:rate-limiter"] = lambda: limiter.give_back("warm-up", 1, 0)
        warm_calls["actor:budget-ledger"] = lambda: ledger.outstanding()
        warm_calls["actor:fine-tuning"] = lambda: wake_fine_tuning(jobs, fine_tuning)
        self.runtime.warm_up = WarmUp(warm_calls)
        runtime = self.runtime
        runtime.key_watcher = KeyChangeWatcher(runtime.directory.key_changes, runtime.verifier)
        runtime.drain_watcher = DrainWatcher(
            runtime.drain,
            lambda: directory.drain_deadline.remote(),
            lambda stats: self._report({**stats, **self._gateway_state()}),
        )

    def _gateway_state(self) -> dict[str, Any]:
        """What this replica reports of itself beside its drain state (for `forge
        status` and /metrics): its usage shipping and its provider queues' depths."""
        runtime = self.runtime
        return {
            "usage": runtime.shipper.state(),
            "provider_queues": runtime.relay.queues.depths(),
            "errors": answered_errors(),
        }

    def check_health(self) -> None:
        """Serve's periodic check (10 s): reports this replica's usage shipping for
        `forge status` (readiness, `/health/ready`, says the same per replica)."""
        self._report(self._gateway_state())

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_app(self.runtime, behind_serve=True)

    async def readiness(self) -> dict[str, bool]:
        async def one(ping: Any) -> bool:
            try:
                return bool(await asyncio.wait_for(ping(), READY_TIMEOUT_S))
            except Exception:
                return False

        names = list(self._pings)
        results = await asyncio.gather(*(one(self._pings[n]) for n in names))
        return dict(zip(names, results, strict=True))
