"""Self-hosted models scaled as the README says they can be: LoRA adapters multiplexed
over two replicas of one model (Serve sends an adapter's requests to the replica that
holds it, rather than loading it everywhere), and a model at ``min_replicas: 0`` that
starts with no replica and still answers its first request (a cold start)."""

from __future__ import annotations

import time

import httpx2
import pytest
import ray
from ray import serve

from actors.facets import running_facet
from forge.cli import model_stats
from forge.config import PlatformConfig
from serve import launcher
from serve.constants import APP_NAME
from tests.live_platform import ask, register_adapter, wait_until_ready

pytestmark = pytest.mark.ray

ADAPTERS = ("multiplex-a", "multiplex-b")


def per_replica(provider: str) -> dict[str, dict]:
    directory = running_facet("directory")
    stats = model_stats(ray.get(directory.replica_stats.remote(), timeout=10))
    return stats.get(provider, {}).get("per_replica", {})


def running_replicas(deployment: str) -> int:
    app = serve.status().applications[APP_NAME]
    return app.deployments[deployment].replica_states.get("RUNNING", 0)


def scaled(config: PlatformConfig) -> PlatformConfig:
    """The session's config with two replicas of `local` and a scale-to-zero tiny model."""
    data = config.model_dump()
    for provider in data["providers"]:
        if provider["name"] == "local":
            provider["replicas"] = 2
    data["providers"].append(
        {
            "name": "local-zero",
            "type": "transformers",
            "model_path": "tiny",
            "placement": "deployment",
            "autoscaling": {"min_replicas": 0, "max_replicas": 1},
        }
    )
    data["models"].append({"name": "tiny-zero", "provider": "local-zero", "context_window": 2048})
    return PlatformConfig.model_validate(data)


def test_adapters_multiplexed_over_two_replicas_and_a_model_scaled_to_zero(platform, adapter_dirs):
    port = int(platform.url.rsplit(":", 1)[1])
    launcher.deploy(scaled(platform.config), "127.0.0.1", port)
    admin = {"authorization": f"Bearer {platform.admin_key}"}
    try:
        deadline = time.monotonic() + 180
        while running_replicas("provider-local") < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert running_replicas("provider-local") == 2
        assert wait_until_ready(platform.url, 120)

        # min_replicas 0: no replica until a request arrives, which then gets its answer.
        assert running_replicas("provider-local-zero") == 0
        assert ask(platform, "tiny-zero")
        assert running_replicas("provider-local-zero") == 1

        for name, source in zip(ADAPTERS, ("support", "legal"), strict=True):
            r = register_adapter(
                platform.url, platform.admin_key, name, "tiny-llama", str(adapter_dirs[source])
            )
            assert r.status_code == 201, r.text
        answers = {
            name: {ask(platform, f"tiny-llama:{name}") for _ in range(4)} for name in ADAPTERS
        }
        assert all(len(a) == 1 for a in answers.values()), answers  # greedy: one answer each

        # Each adapter is held by one replica: its requests went where it was loaded.
        deadline = time.monotonic() + 30  # replicas report at each health check
        while time.monotonic() < deadline:
            replicas = per_replica("local")
            holders = {
                name: [r for r, s in replicas.items() if name in s["adapters"]] for name in ADAPTERS
            }
            if len(replicas) == 2 and all(holders.values()):
                break
            time.sleep(0.5)
        assert len(replicas) == 2, replicas
        assert all(len(h) == 1 for h in holders.values()), holders
    finally:
        for name in ADAPTERS:
            httpx2.delete(f"{platform.url}/admin/adapters/{name}", headers=admin, timeout=30)
        launcher.deploy(platform.config, "127.0.0.1", port)
        assert wait_until_ready(platform.url, 120)
