"""What the usage spool costs a request: the real gateway app, in-process, with and
without the spool, in alternating rounds of the same run (no HTTP or Ray noise around it).

    .venv/bin/python -m bench.spool_bench            # ~1 minute on 2 cores

Prints the p50 per request at concurrency 1 (non-streamed and streamed, 20 chunks each)
for both, their difference (the issue's goal: +0.2 ms p50 at most), and the spool's own
cost per call (a start trace plus a final record).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx2

from actors.usage_recorder import UsageStore
from forge.adapters import CachedAdapterLookup, VisibleAdapters
from forge.config import PlatformConfig
from forge.db.engine import make_engine, make_sessionmaker
from forge.db.migrate import upgrade_async
from forge.directory import Directory
from forge.routing.router import Router
from forge.usage import UsageEvent
from gateway.app import build_app
from gateway.auth import KeyVerifier
from gateway.runtime import GatewayRuntime
from gateway.usage_shipper import UsageShipper
from gateway.usage_spool import UsageSpool
from serve.providers.registry import make_provider

MOCK_PORT = 18011


async def _ready() -> dict[str, bool]:
    return {"bench": True}


async def gateway(work: Path, spool: bool) -> tuple[httpx2.AsyncClient, str, GatewayRuntime]:
    config = PlatformConfig.model_validate(
        {
            "providers": [
                {
                    "name": "mock",
                    "type": "openai_compatible",
                    "base_url": f"http://127.0.0.1:{MOCK_PORT}/v1",
                    "api_key_env": "PATH",  # any set variable: the mock checks no key
                }
            ],
            "models": [{"name": "gpt-mock", "provider": "mock"}],
        }
    )
    url = f"sqlite+aiosqlite:///{work}/forge-{spool}.db"
    await upgrade_async(url)
    engine = make_engine(url)
    directory = Directory(make_sessionmaker(engine))
    adapters = CachedAdapterLookup(directory.get_adapter)
    providers = {p.name: make_provider(p, adapter_lookup=adapters) for p in config.providers}
    usage_spool = None
    if spool:
        usage_spool = UsageSpool(work / f"spool-{spool}")
        usage_spool.open()
    runtime = GatewayRuntime(
        config=config,
        router=Router(
            config.models,
            providers,
            VisibleAdapters(directory.visible_adapter),
            config.routing.groups,
            config.routing.experiments,
        ),
        verifier=KeyVerifier(directory.keys.lookup),
        shipper=UsageShipper(UsageStore(engine).write, spool=usage_spool),
        directory=directory,
        readiness=_ready,
        adapters=adapters,
    )
    runtime.start()
    key = (await directory.create_key("bench")).key
    http = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=build_app(runtime)), base_url="http://gw"
    )
    return http, key, runtime


async def one(http: httpx2.AsyncClient, key: str, stream: bool) -> float:
    body = {"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    t0 = time.perf_counter()
    resp = await http.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )
    assert resp.status_code == 200, resp.text
    return (time.perf_counter() - t0) * 1000


def spool_op_us(work: Path, n: int = 20000) -> float:
    spool = UsageSpool(work / "spool-ops")
    spool.open()
    event = UsageEvent(
        request_id="req_" + "0" * 32,
        created_at=datetime.now(UTC),
        key_id="k" * 32,
        endpoint="chat/completions",
        model="gpt-mock",
        provider="mock",
        provider_model="gpt-mock",
        stream=False,
        prompt_tokens=10,
        completion_tokens=20,
        cost_usd=0.0001,
        latency_ms=2.0,
        status="ok",
        http_status=200,
    )
    t0 = time.perf_counter()
    for i in range(n):
        spool.started(event)
        spool.finished(event)
        if i % 500 == 499:
            spool.acknowledged(500)
    took = (time.perf_counter() - t0) / n * 1e6
    spool.close()
    return took


async def run(rounds: int, n: int, spool_b: bool = True) -> None:
    work = Path(tempfile.mkdtemp(prefix="forge-spool-bench-"))
    mock = subprocess.Popen(
        [sys.executable, "-m", "bench.mock_upstream", "--port", str(MOCK_PORT), "--tokens", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(httpx2.HTTPError):
                httpx2.get(f"http://127.0.0.1:{MOCK_PORT}/v1/models", timeout=1)
                break
            time.sleep(0.1)
        targets = {"off": await gateway(work, False), "on": await gateway(work, spool_b)}
        names = list(targets)
        for _ in range(50):  # warm both
            for http, key, _ in targets.values():
                await one(http, key, False)
        results: dict[tuple[str, bool], list[float]] = {}
        # Requests alternate between the two gateways one by one, so that whatever the
        # machine does meanwhile (shipping, GC, other processes) lands on both alike.
        for r in range(rounds):
            for stream in (False, True):
                for i in range(n):
                    order = names if (i + r) % 2 == 0 else names[::-1]
                    for name in order:
                        http, key, _ = targets[name]
                        results.setdefault((name, stream), []).append(await one(http, key, stream))
        print(f"spool bench: {rounds} rounds x {n} requests at c=1, in-process gateway")
        print("| requests | spool off p50 ms | spool on p50 ms | added ms |")
        print("| --- | --- | --- | --- |")
        for stream in (False, True):
            off = statistics.median(results[("off", stream)])
            on = statistics.median(results[("on", stream)])
            label = "streamed (20 chunks)" if stream else "non-streamed"
            print(f"| {label} | {off:.3f} | {on:.3f} | {on - off:+.3f} |")
        print(f"spool's own work per call (start trace + final record): {spool_op_us(work):.1f} µs")
        for http, _, runtime in targets.values():
            await http.aclose()
            await runtime.close()
    finally:
        mock.terminate()
        mock.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("-n", type=int, default=300, help="requests per round and target")
    ap.add_argument(
        "--noise", action="store_true", help="both gateways without a spool: the noise floor"
    )
    args = ap.parse_args()
    asyncio.run(run(args.rounds, args.n, spool_b=not args.noise))


if __name__ == "__main__":
    main()
