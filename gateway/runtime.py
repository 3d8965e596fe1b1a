"""Everything a gateway replica's routes use, assembled once per replica."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from forge.adapters import CachedAdapterLookup, VisibleAdapters
from forge.audit.store import AuditStore
from forge.batches.store import BatchStore
from forge.budgets.gate import BudgetGate
from forge.config import KEYED_TYPES, PlatformConfig
from forge.credentials.opener import CredentialOpener
from forge.credentials.sealing import Keyring
from forge.db.schema import DEFAULT_ORG_ID
from forge.directory import Directory
from forge.files.store import FileStore
from forge.finetune.learning import LearningStore
from forge.finetune.manager import JobManager
from forge.finetune.store import JobStore
from forge.identity.mailer import mailer_for
from forge.identity.scim import ScimStore
from forge.identity.service import Identity
from forge.identity.sso import SingleSignOn
from forge.limits.admission import Admission
from forge.people.store import PeopleStore
from forge.quality.judge import Judge, QualityScores
from forge.routing.auto import AutoRouter
from forge.routing.breakers import Breakers, Opening
from forge.routing.planner import Planner
from forge.routing.provider_limits import ProviderQueues
from forge.routing.retries import RetryPolicy
from forge.routing.router import Router
from forge.routing.stats import RouteStats
from forge.routing.tokens import TokenCounter
from forge.settings import Settings
from forge.tenancy.retention import RetentionStore
from forge.tenancy.store import TenancyStore
from forge.ttl_cache import TtlCache
from forge.webhooks.events import Event
from forge.webhooks.sender import WebhookSender
from forge.webhooks.store import WebhookStore
from gateway.audit import AuthFailures
from gateway.auth import KeyVerifier
from gateway.breaker_watch import BreakerSharing
from gateway.drain import Drain, DrainWatcher
from gateway.key_changes import KeyChangeWatcher
from gateway.learning_capture import LearningCapture
from gateway.metrics import MetricsSources
from gateway.relay import Relay
from gateway.usage_shipper import UsageShipper
from gateway.warm import WarmUp


class Responses(Protocol):
    """Stored responses as the Responses routes need them (``forge.responses_store``'s
    ``ResponseStore``; every read and delete scoped by ``owner``, expired = not found)."""

    async def save(
        self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]]
    ) -> None: ...

    async def get(self, response_id: str, owner: str) -> dict[str, Any] | None: ...

    async def delete(self, response_id: str, owner: str) -> bool: ...

    async def input_items(
        self,
        response_id: str,
        owner: str,
        *,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> dict[str, Any] | None: ...

    async def conversation(self, response_id: str, owner: str) -> list[dict[str, Any]]: ...

    async def prune_expired(self, batch: int = 500) -> int: ...

    async def close(self) -> None: ...


if TYPE_CHECKING:
    from forge.tracing import Tracing

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


Readiness = Callable[[], Awaitable[dict[str, bool]]]


@dataclass
class GatewayRuntime:
    """A replica's parts. ``drain_watcher`` (behind Serve) learns of a cluster-wide drain;
    ``warm_up`` (behind Serve) sets up the paths to provider deployments as it starts.
    ``responses``: the stored responses (None: nothing is stored, ``store`` echoes false)."""

    config: PlatformConfig
    router: Router
    verifier: KeyVerifier
    shipper: UsageShipper
    directory: Directory
    readiness: Readiness
    adapters: CachedAdapterLookup | None = None  # by registry key (in-process model servers)
    visible_adapters: VisibleAdapters | None = None  # by alias, as a project sees them
    drain: Drain = field(default_factory=Drain)
    drain_watcher: DrainWatcher | None = None
    warm_up: WarmUp | None = None
    responses: Responses | None = None
    files: FileStore | None = None  # uploaded files (None: `/v1/files` answers 404s)
    fine_tuning: JobManager | None = None  # the job manager (its actor's client, behind Serve)
    fine_tuning_jobs: JobStore | None = None  # its jobs, read here (None: no fine-tuning)
    batches: BatchStore | None = None  # batches (None: `/v1/batches` answers 404s)
    tenancy: TenancyStore | None = None  # the Admin API's organisations and projects
    key_watcher: KeyChangeWatcher | None = None  # hears other replicas' key changes
    database: AsyncEngine | None = None  # the replica's own pool, disposed at close
    admission: Admission | None = None  # rate limits (None: none are enforced)
    audit: AuditStore | None = None  # the audit log (None: nothing is audited)
    budgets: BudgetGate | None = None  # budgets (None: none are enforced)
    people: PeopleStore | None = None  # users, invitations and roles of the Admin API
    keyring: Keyring | None = None  # seals projects' own provider keys (None: no BYOK)
    breaker_sharing: BreakerSharing | None = None  # breakers shared (None: this replica's)
    metrics: MetricsSources | None = None  # what /metrics reads (None: no /metrics)
    webhooks: WebhookStore | None = None  # endpoints and the outbox (None: no webhooks)
    tracing: Tracing | None = None  # OpenTelemetry (None: from config.tracing, if enabled)
    identity: Identity | None = None  # people's logins (None: from the database and keyring)
    sso: SingleSignOn | None = None  # organisations' identity providers (with identity)
    scim: ScimStore | None = None  # SCIM provisioning at /scim/v2 (with identity)
    retention: RetentionStore | None = None  # data retention (None: from the database)

    def __post_init__(self) -> None:
        opener = None
        if self.keyring is not None:
            keyed = (p.name for p in self.config.providers if p.type in KEYED_TYPES)
            opener = CredentialOpener(self.keyring, keyed)
        routing = self.config.routing
        stats = RouteStats()  # this replica's view of its targets, for planner and auto
        sharing = self.breaker_sharing
        self.breakers = Breakers(
            routing.breaker, publish=sharing.publish if sharing is not None else None
        )
        if sharing is not None:
            sharing.breakers = self.breakers
            sharing.on_change = self._breaker_changed
        self.webhook_sender: WebhookSender | None = None
        hooks = self.config.webhooks
        if self.webhooks is not None and hooks.enabled:
            self.webhook_sender = WebhookSender(
                self.webhooks,
                hooks.retry_schedule_s,
                poll_s=hooks.poll_interval_s,
                timeout_s=hooks.timeout_s,
            )
        self.relay = Relay(
            self.router,
            self.shipper,
            self.drain,
            self.admission,
            self.budgets,
            opener,
            planner=Planner(self.breakers, stats, tokens=TokenCounter(self.config.providers)),
            retries=RetryPolicy(routing.retry),
            max_wait_s=routing.max_wait_s,
            auto=AutoRouter(routing.auto, self.router, stats),
            queues=ProviderQueues({p.name: p.rate_limits for p in self.config.providers}),
        )
        if self.tracing is None and self.config.tracing.enabled:
            from forge.tracing import Tracing  # the SDK, only when tracing is on

            self.tracing = Tracing(self.config.tracing)
        if self.tracing is not None:
            self.relay.tracer = self.tracing.tracer
        judging = self.config.quality.judge
        if judging.model is not None and judging.sample_rate > 0 and self.tenancy is not None:
            self.relay.judge = Judge(judging, QualityScores(self.tenancy.sessions))
        if self.identity is None and self.tenancy is not None and self.keyring is not None:
            auth = self.config.auth
            mailer = mailer_for(auth.mail_dir, auth.smtp_url, auth.mail_from, Settings().data_dir)
            self.identity = Identity(self.tenancy.sessions, auth, self.keyring, mailer, self.audit)
        if self.sso is None and self.identity is not None and self.tenancy is not None:
            assert self.keyring is not None  # identity has one
            self.sso = SingleSignOn(self.tenancy.sessions, self.identity, self.keyring)
        if self.scim is None and self.identity is not None and self.tenancy is not None:
            self.scim = ScimStore(self.tenancy.sessions, self.config.auth.public_url)
        if self.retention is None and self.tenancy is not None:
            days = self.config.responses.retention_days
            self.retention = RetentionStore(self.tenancy.sessions, days)
        self._kept: TtlCache[str, float] = TtlCache(10_000)
        if self.fine_tuning_jobs is not None:
            self.relay.learning = LearningCapture(
                LearningStore(self.fine_tuning_jobs.sessions), keeps_bodies=self.keeps_bodies
            )
        self.auth_failures = AuthFailures()
        self._tasks: list[asyncio.Task[Any]] = []
        self.batch_runner: Any = None  # forge.batches.runner.BatchRunner, once started
        self._batch_task: asyncio.Task[None] | None = None
        self._emitting: set[asyncio.Task[None]] = set()
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
        if self.key_watcher is not None:
            self._tasks.append(loop.create_task(self.key_watcher.run()))
        if self.breaker_sharing is not None:
            self._tasks.append(loop.create_task(self.breaker_sharing.run()))
        if self.webhook_sender is not None:
            self._tasks.append(loop.create_task(self.webhook_sender.run()))
        if self.admission is not None:  # idle leases' tokens back to the limiter
            self._tasks.append(loop.create_task(self.admission.leases.run_sweeper()))
            if self.admission.concurrency is not None:  # idle permits back, and a heartbeat
                self._tasks.append(loop.create_task(self.admission.concurrency.run_sweeper()))
        if self.budgets is not None:  # spent and idle budget holds back to the ledger
            self._tasks.append(loop.create_task(self.budgets.run_giver()))
        if self.responses is not None:
            self._tasks.append(loop.create_task(self._prune_responses(self.responses)))
        if self.retention is not None:
            self._tasks.append(loop.create_task(self._purge_retained(self.retention)))
        if self.batches is not None and self.config.batches.run:
            self._batch_task = loop.create_task(self._run_batches(self.batches))

    async def _run_batches(self, store: BatchStore) -> None:
        """This replica's batch runner (gateway.batch_dispatch runs each line)."""
        from forge.batches.runner import BatchRunner
        from gateway.batch_dispatch import BatchDispatch

        cfg = self.config.batches
        self.batch_runner = BatchRunner(
            store,
            BatchDispatch(self),
            f"runner-{random.getrandbits(48):012x}",
            concurrency=cfg.concurrency,
            poll_s=cfg.poll_s,
        )
        await self.batch_runner.run()

    async def keys_changed(self, key_ids: list[str] | None) -> None:
        """Forget ``key_ids`` (None: every key) here at once, and tell every other
        replica through the directory. Best effort: the change is in the database, so a
        replica that misses it still follows within ``auth_cache_ttl_s``."""
        if key_ids is None:
            self.verifier.forget()
        else:
            for key_id in key_ids:
                self.verifier.forget(key_id)
        try:
            await self.directory.announce_key_changes(key_ids)
        except Exception as exc:
            log.warning("announcing key changes failed: %s", type(exc).__name__)

    def wake_webhooks(self) -> None:
        if self.webhook_sender is not None:
            self.webhook_sender.wake()

    async def emit_webhook(self, org_id: str, event: Event) -> None:
        """Put ``event`` in the outbox for ``org_id``'s endpoints. Best effort where the
        event has no transaction of its own: a failure is logged, the action stands."""
        if self.webhooks is None:
            return
        try:
            if await self.webhooks.emit(org_id, event):
                self.wake_webhooks()
        except Exception as exc:
            log.warning("webhook event %s not written: %s", event.type, type(exc).__name__)

    def _breaker_changed(self, key: str, opening: Opening | None) -> None:
        """A breaker opened or closed for every replica: the operator's event."""
        if opening is None:
            event = Event(type="breaker.closed", timestamp=_utcnow(), data={"target": key})
        else:
            until = datetime.fromtimestamp(opening.until, UTC).isoformat()
            data = {"target": key, "until": until, "reason": opening.reason}
            event = Event(type="breaker.opened", timestamp=_utcnow(), data=data)
        task = asyncio.get_running_loop().create_task(self.emit_webhook(DEFAULT_ORG_ID, event))
        self._emitting.add(task)
        task.add_done_callback(self._emitting.discard)

    async def _prune_responses(self, store: Responses) -> None:
        """Delete expired stored responses every ``responses.prune_interval_s``, first at
        a random point of the first interval (replicas started together spread out;
        several pruning at once only find less to delete)."""
        interval = self.config.responses.prune_interval_s
        await asyncio.sleep(random.uniform(0.1, 1.0) * interval)
        while True:
            try:
                pruned = await store.prune_expired()
                if pruned:
                    log.info("pruned %d expired stored responses", pruned)
            except Exception as exc:  # the database away: the next interval tries again
                log.warning("pruning stored responses failed: %s", type(exc).__name__)
            await asyncio.sleep(interval)

    async def keeps_bodies(self, project_id: str | None) -> bool:
        """Whether the project may keep request and response bodies (its data
        retention; cached a few seconds: a change reaches every replica within them)."""
        if self.retention is None or project_id is None:
            return True
        found, days = self._kept.lookup(project_id)
        if not found or days is None:
            days = (await self.retention.kept(project_id)).body_days
            self._kept.put(project_id, days, self.config.gateway.auth_cache_ttl_s)
        return days > 0

    def forget_retention(self) -> None:
        self._kept.clear()

    async def _purge_retained(self, retention: RetentionStore) -> None:
        """Delete what outlived its data retention, every ``responses.prune_interval_s``
        (at a random point of the first interval, like the responses' prune)."""
        interval = self.config.responses.prune_interval_s
        await asyncio.sleep(random.uniform(0.1, 1.0) * interval)
        while True:
            try:
                gone = await retention.purge()
                if any(gone.values()):
                    log.info("data retention purged %s", gone)
            except Exception as exc:  # the database away: the next interval tries again
                log.warning("data retention purge failed: %s", type(exc).__name__)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._batch_task is not None:  # its lines' results written, the rest handed back
            self._batch_task.cancel()
            await asyncio.wait([self._batch_task], timeout=10)
        if self.webhook_sender is not None:
            await self.webhook_sender.close()
        if self.relay.judge is not None:
            await self.relay.judge.close()
        if self.relay.learning is not None:
            await self.relay.learning.close()
        if self.identity is not None:
            await self.identity.flush()
        if self.sso is not None:
            await self.sso.provider.close()
        if self.tracing is not None:
            self.tracing.shutdown()  # exports what it still holds
        await self.shipper.close()
        if self.responses is not None:
            await self.responses.close()
        if self.database is not None:
            await self.database.dispose()
        for client in self.router.clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                await close()
