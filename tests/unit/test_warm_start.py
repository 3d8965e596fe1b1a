"""Warm-up at replica start (gateway/warm.py): each provider deployment's handle path is
set up by one call as the gateway replica starts, in the background; a slow or failing
warm-up never holds up or fails the start. Without Ray: fake handles and warm calls."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2

from forge.config import PlatformConfig
from forge.routing.router import Router
from gateway.app import build_app
from gateway.auth import KeyVerifier
from gateway.runtime import GatewayRuntime
from gateway.usage_shipper import UsageShipper
from gateway.warm import NO_KEY_DIGEST, WarmUp, provider_warm_calls
from serve.handles import HandleProviderClient
from serve.providers.registry import make_provider

UPSTREAM = "http://127.0.0.1:9/v1"  # never reached: nothing here calls upstream


class FakeHandle:
    """A DeploymentHandle's surface: ``options`` views that share one log of calls."""

    def __init__(self, calls: list[tuple[Any, tuple[Any, ...]]], **options: Any) -> None:
        self.calls = calls
        self.options_ = options

    def options(self, **options: Any) -> FakeHandle:
        return FakeHandle(self.calls, **{**self.options_, **options})

    def remote(self, *args: Any) -> Any:
        self.calls.append((self.options_.get("method_name"), args))

        async def answer() -> bool:
            return True

        return answer()


def config() -> PlatformConfig:
    providers = [
        {"name": name, "type": "openai_compatible", "base_url": UPSTREAM, "placement": placement}
        for name, placement in (("proxied", "deployment"), ("inproc", "gateway"))
    ]
    models = [
        {"name": "via-handle", "provider": "proxied", "model": "m"},
        {"name": "in-gateway", "provider": "inproc", "model": "m"},
    ]
    return PlatformConfig.model_validate({"providers": providers, "models": models})


def runtime_with(clients: dict[str, Any], warm_up: WarmUp | None) -> GatewayRuntime:
    cfg = config()

    async def lookup(_: str) -> None:
        return None

    async def batch(_: Any) -> None:
        return None

    async def ready() -> dict[str, bool]:
        return {"in-process": True}

    return GatewayRuntime(
        config=cfg,
        router=Router(cfg.models, clients),
        verifier=KeyVerifier(lookup),
        shipper=UsageShipper(batch),
        directory=None,  # type: ignore[arg-type]  # the admin routes are not called
        readiness=ready,
        warm_up=warm_up,
    )


async def test_the_handle_client_warms_through_its_handle_and_nothing_else():
    calls: list[tuple[Any, tuple[Any, ...]]] = []
    client = HandleProviderClient(FakeHandle(calls))  # type: ignore[arg-type]
    assert await client.warm() is True
    assert calls == [("warm", ())]  # the deployment's own `warm`: no complete, no ping


async def test_only_clients_behind_a_handle_are_warmed():
    """A provider running in the gateway has its SDK client from its constructor and no
    handle to set up; a handle client gets its call."""
    cfg = config()
    inproc = make_provider(cfg.providers[1])
    try:
        handle_client = HandleProviderClient(FakeHandle([]))  # type: ignore[arg-type]
        calls = provider_warm_calls({"proxied": handle_client, "inproc": inproc})
        assert list(calls) == ["provider:proxied"]
        assert calls["provider:proxied"] == handle_client.warm
    finally:
        await inproc.close()


async def test_warm_up_records_each_call_and_never_raises():
    async def fine() -> bool:
        return True

    async def broken() -> bool:
        raise RuntimeError("no such method on an older replica")

    async def stuck() -> bool:
        await asyncio.Event().wait()
        return True

    warm = WarmUp({"a": fine, "b": broken, "c": stuck}, timeout_s=0.05)
    assert await warm.run() == {"a": True, "b": False, "c": False}
    assert warm.results == {"a": True, "b": False, "c": False}


async def test_the_start_does_not_wait_for_the_warm_up_and_ready_reports_it():
    """The replica answers (readiness included) while a warm-up call is still pending;
    ``/health/ready`` reports what has been warmed, outside its components; closing the
    replica cancels a warm-up still pending."""
    release = asyncio.Event()
    cancelled = asyncio.Event()
    started: list[str] = []

    async def slow() -> bool:
        started.append("slow")
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    async def directory() -> None:
        started.append("directory")

    warm = WarmUp({"provider:slow": slow, "actor:directory": directory})
    runtime = runtime_with({"proxied": object(), "inproc": object()}, warm)
    app = build_app(runtime)
    runtime.start()  # returns at once: the warm-up runs in the background
    runtime.start()  # idempotent: no second warm-up
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as http:
        for _ in range(100):
            if "actor:directory" in warm.results:
                break
            await asyncio.sleep(0.01)
        assert sorted(started) == ["directory", "slow"]
        ready = await http.get("/health/ready")
        assert ready.status_code == 200
        body = ready.json()
        assert body["warm"] == {"actor:directory": True}  # the slow call is still pending
        assert "actor:directory" not in body["components"]
        release.set()
        for _ in range(100):
            if "provider:slow" in warm.results:
                break
            await asyncio.sleep(0.01)
        assert (await http.get("/health/ready")).json()["warm"] == {
            "actor:directory": True,
            "provider:slow": True,
        }
    await runtime.close()

    # A second replica whose warm-up is still pending when it closes.
    release.clear()
    started.clear()
    warm = WarmUp({"provider:slow": slow})
    runtime = runtime_with({"proxied": object(), "inproc": object()}, warm)
    runtime.start()
    for _ in range(100):
        if started:
            break
        await asyncio.sleep(0.01)
    await runtime.close()
    await asyncio.wait_for(cancelled.wait(), 1)
    assert warm.results == {}


async def test_without_a_warm_up_ready_reports_none():
    runtime = runtime_with({"proxied": object(), "inproc": object()}, None)
    app = build_app(runtime)
    runtime.start()
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as http:
        assert (await http.get("/health/ready")).json()["warm"] == {}
    await runtime.close()


def test_the_directory_warm_up_digest_is_no_key():
    """The directory's warm-up looks up a digest that no key can have (keys are hashed
    with SHA-256 to 64 hex digits; this is all zeros)."""
    assert len(NO_KEY_DIGEST) == 64 and set(NO_KEY_DIGEST) == {"0"}


async def test_the_provider_deployments_answer_the_warm_call_themselves():
    """The method the handle calls exists on both provider shells and answers without
    its provider (a bare instance: no provider, no engine, no upstream)."""
    from serve.deployments import ModelServerDeployment, ProviderDeployment

    for deployment in (ProviderDeployment, ModelServerDeployment):
        cls = deployment.func_or_class
        assert await cls.warm(object.__new__(cls)) is True
