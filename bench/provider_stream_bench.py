"""End-to-end streaming overhead per provider: each provider's fake called directly vs the
same stream through the gateway (in-process: the real app on uvicorn, no Ray), same run.

    .venv/bin/python -m bench.provider_stream_bench

The direct side consumes the provider's own stream format (SSE, Anthropic's events,
Ollama's NDJSON); the gateway side consumes the OpenAI SSE the platform translates it to.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx2
import uvicorn

from forge.config import PlatformConfig
from forge.db.engine import make_engine
from forge.db.migrate import upgrade_async
from tests.contract.cases import CASES
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.openai_family import FakeLlamaCpp, FakeTgi
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import free_port
from tests.unit.harness import in_process_gateway

STREAMS = 150
FAKES = {
    "fake_openai": FakeOpenAI,
    "fake_anthropic": FakeAnthropic,
    "fake_llamacpp": FakeLlamaCpp,
    "fake_tgi": FakeTgi,
    "fake_ollama": FakeOllama,
    "fake_gemini": FakeGemini,
}
DIRECT = {  # how each provider's own API is called for the same reply
    "openai_compatible": ("/v1/chat/completions", {}),
    "llamacpp": ("/v1/chat/completions", {}),
    "hf_tgi": ("/v1/chat/completions", {}),
    "anthropic": ("/v1/messages", {"max_tokens": 50}),
    "ollama": ("/api/chat", {}),
    "gemini": ("/v1beta/models/{model}:streamGenerateContent?alt=sse", {}),
}


def direct_headers(key_env: str | None) -> dict[str, str]:
    key = os.environ.get(key_env, "") if key_env else ""
    if not key:
        return {"anthropic-version": "2023-06-01"}
    auth = {"Authorization": f"Bearer {key}", "x-api-key": key, "x-goog-api-key": key}
    return {**auth, "anthropic-version": "2023-06-01"}


async def timed_streams(client: httpx2.AsyncClient, url: str, body: dict, headers: dict) -> float:
    """Median milliseconds to consume one whole stream."""
    times = []
    for _ in range(STREAMS):
        t0 = time.perf_counter()
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            assert resp.status_code == 200, await resp.aread()
            async for _ in resp.aiter_lines():
                pass
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times[STREAMS // 10 :])


async def main() -> None:
    os.environ.update(
        {
            "FAKE_UPSTREAM_KEY": "sk-upstream-test",
            "FAKE_ANTHROPIC_KEY": "sk-ant-test",
            "FAKE_TGI_KEY": "hf_test_token",
            "FAKE_GEMINI_KEY": "gemini-test-key",
        }
    )
    fakes = {name: cls().start() for name, cls in FAKES.items()}
    cases = [c for c in CASES if c.type in DIRECT]
    config = PlatformConfig.model_validate(
        {
            "providers": [c.provider_config(fakes[c.fake]) for c in cases],
            "models": [m for c in cases for m in c.models()],
        }
    )
    db = Path(tempfile.mkdtemp()) / "bench.db"
    await upgrade_async(f"sqlite+aiosqlite:///{db}")
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    async with in_process_gateway(config, engine) as gw:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(gw.app, port=port, log_level="error", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            await asyncio.sleep(0.05)
        rows = []
        async with httpx2.AsyncClient(timeout=30) as client:
            for case in cases:  # warm every path (connections, caches) before timing any
                via = {
                    "model": f"{case.name}-ok",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hello"}],
                }
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                for _ in range(20):
                    async with client.stream(
                        "POST", url, json=via, headers={"Authorization": f"Bearer {gw.user_key}"}
                    ) as resp:
                        await resp.aread()
            for case in cases:
                fake = fakes[case.fake]
                path, extra = DIRECT[case.type]
                direct_body = {
                    "model": case.ok_model,
                    "stream": True,
                    **extra,
                    "messages": [{"role": "user", "content": "hello"}],
                }
                if case.type == "gemini":
                    path = path.format(model=case.ok_model)
                    direct_body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
                via_body = {
                    "model": f"{case.name}-ok",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hello"}],
                }
                direct = await timed_streams(
                    client, fake.url + path, direct_body, direct_headers(case.key_env)
                )
                via = await timed_streams(
                    client,
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    via_body,
                    {"Authorization": f"Bearer {gw.user_key}"},
                )
                rows.append((case.name, case.type, direct, via))
        server.should_exit = True
        thread.join(10)
    await engine.dispose()
    for fake in fakes.values():
        fake.stop()
    print(
        f"| provider | direct stream ms | through the gateway ms | added ms ({STREAMS} streams, "
        "median) |"
    )
    print("| --- | --- | --- | --- |")
    for name, kind, direct, via in rows:
        print(f"| {name} ({kind}) | {direct:.2f} | {via:.2f} | {via - direct:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
