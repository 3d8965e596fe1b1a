"""The gateway assembled in-process, without Ray: the real app, the real provider
classes talking to the fake upstream, the real key and usage stores on a real database."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.usage_recorder import UsageStore
from forge.adapters import AdapterRegistry, CachedAdapterLookup, VisibleAdapters
from forge.audit.store import AuditStore
from forge.batches.store import BatchStore
from forge.budgets.gate import BudgetGate
from forge.budgets.ledger import BudgetLedger
from forge.config import PlatformConfig
from forge.credentials.sealing import Keyring, new_key_entry
from forge.db.engine import make_sessionmaker
from forge.db.schema import UsageRecord
from forge.directory import Directory
from forge.files.store import FileStore
from forge.finetune.manager import JobManager
from forge.finetune.store import JobStore
from forge.keys import KeyStore
from forge.limits.admission import Admission
from forge.limits.concurrency import ConcurrencyLeases
from forge.limits.lease import LeasedAdmission
from forge.limits.limiter import RateLimiter
from forge.people.store import PeopleStore
from forge.responses_store import ResponseStore
from forge.routing.breakers import BreakerBoard
from forge.routing.router import Router
from forge.tenancy.store import TenancyStore
from forge.usage_metrics import UsageMetrics
from forge.webhooks.store import WebhookStore
from gateway.app import build_app
from gateway.auth import KeyVerifier
from gateway.breaker_watch import BreakerSharing
from gateway.metrics import MetricsSources
from gateway.runtime import GatewayRuntime
from gateway.usage_shipper import UsageShipper
from gateway.usage_spool import UsageSpool
from serve.providers.registry import make_provider

ANTHROPIC_SCENARIOS = (
    "error-429",
    "error-529",
    "midstream-error",
    "truncated",
    "malformed",
    "cached",
    "slow-stream",
)


def platform_config(
    upstream_base_url: str, anthropic_url: str | None = None, **server: object
) -> PlatformConfig:
    """Models on the fake OpenAI upstream (as a proxy deployment and in the gateway) and,
    given ``anthropic_url``, on the fake Anthropic API (names prefixed ``claude-``)."""
    models = [
        {
            "name": "gpt-test",
            "provider": "fake",
            "model": "gpt-fake",
            "input_price_per_mtok": 1.0,
            "output_price_per_mtok": 2.0,
            "context_window": 8192,
            "shared": True,  # stands in for one of the platform's shared models
        },
        {"name": "embed-test", "provider": "fake", "model": "text-embedding-fake"},
        {
            "name": "text-only",
            "provider": "fake",
            "model": "gpt-fake",
            "capabilities": {"tools": False, "vision": False, "json_mode": False},
        },
        {"name": "gpt-inproc", "provider": "fake-inproc", "model": "gpt-fake"},
        {"name": "slow-stream-inproc", "provider": "fake-inproc", "model": "slow-stream"},
        {"name": "flaky", "provider": "fake", "model": "error-500", "fallbacks": ["gpt-test"]},
        *(
            {
                "name": f"flaky-{s}",
                "provider": "fake",
                "model": f"error-{s}",
                "fallbacks": ["gpt-test"],
            }
            for s in ("429", "503", "400")
        ),
    ]
    for scenario in (
        "error-429",
        "error-500",
        "error-503",
        "error-400",
        "error-404",
        "hang",
        "drop",
        "malformed",
        "midstream-drop",
        "midstream-error",
        "truncated",
        "slow-stream",
        "sloppy-json",
    ):
        models.append({"name": scenario, "provider": "fake", "model": scenario})
    providers = [
        {
            "name": name,
            "type": "openai_compatible",
            "base_url": upstream_base_url,
            "api_key_env": "FAKE_UPSTREAM_KEY",
            "timeout_s": 2.0,
            "placement": placement,
        }
        for name, placement in (("fake", "deployment"), ("fake-inproc", "gateway"))
    ]
    if anthropic_url:
        providers.append(
            {
                "name": "claude",
                "type": "anthropic",
                "base_url": anthropic_url,
                "api_key_env": "FAKE_ANTHROPIC_KEY",
                "timeout_s": 2.0,
            }
        )
        models.append(
            {
                "name": "claude-test",
                "provider": "claude",
                "model": "claude-fake",
                "input_price_per_mtok": 3.0,
                "output_price_per_mtok": 15.0,
            }
        )
        models += [
            {"name": f"claude-{s}", "provider": "claude", "model": s} for s in ANTHROPIC_SCENARIOS
        ]
    return PlatformConfig.model_validate(
        {"server": server, "providers": providers, "models": models}
    )


@dataclass
class Harness:
    runtime: GatewayRuntime
    keys: KeyStore
    user_key: str
    admin_key: str
    http: httpx2.AsyncClient
    engine: AsyncEngine
    app: Any
    operator_key: str = ""  # the platform operator's (role platform)

    def anthropic_sdk(self, key: str | None = None):
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=key or self.user_key,
            base_url="http://gateway",
            http_client=self.http,
            max_retries=0,
        )

    def sdk(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=key or self.user_key,
            base_url="http://gateway/v1",
            http_client=self.http,
            max_retries=0,
        )


TEST_KEYRING = new_key_entry("test")  # the in-process gateway's, for sealed provider keys


@asynccontextmanager
async def in_process_gateway(
    config: PlatformConfig,
    engine: AsyncEngine,
    tracing: Any = None,
    fine_tuning_launcher: Any = None,
) -> AsyncIterator[Harness]:
    """The gateway app in this process over real stores (``tracing``: a forge.tracing
    ``Tracing``, e.g. with an in-memory exporter; ``fine_tuning_launcher``: fine-tuning
    jobs run through it, e.g. train.local_launcher's)."""
    directory = Directory(make_sessionmaker(engine))
    keys = directory.keys
    limiter = RateLimiter()
    spool_dir = Path(tempfile.mkdtemp(prefix="forge-spool-"))
    spool = UsageSpool(spool_dir)
    spool.open()
    traffic = UsageMetrics()
    usage = UsageStore(engine, observe=traffic.observe)
    board = BreakerBoard()
    adapters = CachedAdapterLookup(directory.get_adapter, ttl_s=config.gateway.auth_cache_ttl_s)
    visible = VisibleAdapters(directory.visible_adapter, ttl_s=config.gateway.auth_cache_ttl_s)
    providers = {p.name: make_provider(p, adapter_lookup=adapters) for p in config.providers}
    shipper = UsageShipper(
        usage.write,
        spool=spool,
        flush_interval_s=0.01,
        unready_after_s=config.usage.unready_after_s,
    )
    ledger = BudgetLedger(make_sessionmaker(engine))
    files = FileStore.on(make_sessionmaker(engine), config.files, spool_dir)
    webhooks = WebhookStore(make_sessionmaker(engine), Keyring.parse(TEST_KEYRING))
    fine_tuning = None
    if fine_tuning_launcher is not None:
        fine_tuning = JobManager(
            JobStore(make_sessionmaker(engine), webhooks.emit),
            files,
            AdapterRegistry(make_sessionmaker(engine)),
            config,
            fine_tuning_launcher,
            spool_dir / "fine_tuning",
        )
    runtime = GatewayRuntime(
        config=config,
        router=Router(
            config.models,
            providers,
            visible,
            config.routing.groups,
            config.routing.experiments,
        ),
        verifier=KeyVerifier(directory.verify, ttl_s=config.gateway.auth_cache_ttl_s),
        shipper=shipper,
        directory=directory,
        readiness=_all_ready,
        adapters=adapters,
        visible_adapters=visible,
        responses=ResponseStore(engine),
        files=files,
        fine_tuning=fine_tuning,
        fine_tuning_jobs=fine_tuning.store if fine_tuning is not None else None,
        batches=BatchStore(
            make_sessionmaker(engine), files, claim_s=config.batches.claim_s, emit=webhooks.emit
        ),
        tenancy=TenancyStore(make_sessionmaker(engine)),
        people=PeopleStore(make_sessionmaker(engine)),
        keyring=Keyring.parse(TEST_KEYRING),
        webhooks=webhooks,
        admission=Admission(
            LeasedAdmission(limiter.grant, limiter.give_back),
            ConcurrencyLeases(limiter.acquire, limiter.release, limiter.report, "in-process"),
        ),
        audit=AuditStore(make_sessionmaker(engine)),
        budgets=BudgetGate(ledger.reserve, ledger.release, shipper.flush, expire=ledger.expire),
        breaker_sharing=BreakerSharing(board),
        metrics=MetricsSources(
            usage=_now(traffic.exposition),
            breakers=lambda: board.breakers_since(None, 0, 0),
        ),
        tracing=tracing,
    )
    app = build_app(runtime)
    runtime.start()
    user = await keys.create_key("user")
    admin = await keys.create_key("admin", role="admin")
    operator = await keys.create_key("operator", role="platform")
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield Harness(runtime, keys, user.key, admin.key, http, engine, app, operator.key)
    if fine_tuning_launcher is not None:
        await fine_tuning_launcher.close()
    await runtime.close()
    for p in providers.values():
        await p.close()
    shutil.rmtree(spool_dir, ignore_errors=True)


async def usage_rows(h: Harness) -> list:
    """Every usage row, after the shipper has delivered what it holds."""
    assert await h.runtime.shipper.flush()
    async with h.engine.connect() as conn:
        return (await conn.execute(select(UsageRecord))).mappings().all()


def _now(make: Callable[[], bytes]) -> Callable[[], Awaitable[bytes]]:
    async def call() -> bytes:
        return make()

    return call


async def _all_ready() -> dict[str, bool]:
    return {"in-process": True}
