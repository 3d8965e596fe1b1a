"""Helpers for tests that run the real platform on a local Ray (the integration suite,
and the vLLM venv's platform test): keys, readiness, adapter registration."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

import httpx2
import openai
import pytest

from forge.db.engine import make_engine, make_sessionmaker
from forge.keys import KeyStore
from serve.constants import APP_NAME
from serve.env import FAST_SERVE_ENV
from serve.local_ray import init_local_head
from tests.fakes.server import free_port


def start_local_ray(data_dir: Path, num_cpus: int = 4) -> None:
    """A local Ray for the platform, its data under ``data_dir``."""
    os.environ["FORGE_DATA_DIR"] = str(data_dir)
    for key, value in FAST_SERVE_ENV.items():
        os.environ.setdefault(key, value)
    # HAProxy's own stats and metrics ports, on free ports so that a platform running
    # on this machine (or a leftover) cannot collide with the tests' cluster.
    os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
    os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
    init_local_head(APP_NAME, num_cpus=num_cpus)


async def make_keys(db_url: str) -> tuple[str, str]:
    """A user key and an admin key in the platform's database."""
    engine = make_engine(db_url)
    try:
        store = KeyStore(make_sessionmaker(engine))
        user = await store.create_key("integration")
        admin = await store.create_key("integration-admin", role="admin")
        return user.key, admin.key
    finally:
        await engine.dispose()


def wait_until_ready(url: str, timeout_s: float) -> bool:
    """Poll the gateway's readiness until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url + "/health/ready", timeout=5).status_code == 200:
                return True
        except httpx2.HTTPError:
            pass
        time.sleep(0.5)
    return False


def register_adapter(
    url: str, admin_key: str, name: str, model: str, source: str
) -> httpx2.Response:
    """``POST /admin/adapters``: loads on a replica, then registers."""
    return httpx2.post(
        url + "/admin/adapters",
        json={"name": name, "model": model, "source": source},
        headers={"authorization": f"Bearer {admin_key}"},
        timeout=120,
    )


class LivePlatform(Protocol):
    url: str
    admin_key: str

    def sdk(self) -> openai.OpenAI: ...


def ask(platform: LivePlatform, model: str, **extra: object) -> str:
    """A short greedy chat answer from ``model``."""
    reply = platform.sdk().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "def handler(event):"}],
        max_tokens=10,
        temperature=0,
        **extra,
    )
    return reply.choices[0].message.content or ""


def check_adapter_serving(platform: LivePlatform, base_model: str, source: str) -> None:
    """Register adapter ``support`` for ``base_model``; it must answer, differently from
    the base, as ``<base>:support`` and as ``support``; an unknown adapter is a 404."""
    base = ask(platform, base_model)
    r = register_adapter(platform.url, platform.admin_key, "support", base_model, source)
    assert r.status_code == 201, r.text
    tuned = ask(platform, f"{base_model}:support")
    assert tuned != base and ask(platform, "support") == tuned
    with pytest.raises(openai.NotFoundError):
        ask(platform, f"{base_model}:ghost")
