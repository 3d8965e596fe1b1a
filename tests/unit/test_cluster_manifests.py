"""The cluster/ manifests parse, name an importable application, and carry no secrets.

Fast and offline: nothing here starts Ray or opens a connection. The Serve configs are validated
against Ray's own schema (ServeDeploySchema), the launcher config against ray-schema.json.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
SERVE_CONFIG = CLUSTER / "serve-config.yaml"
RAYSERVICE = CLUSTER / "kuberay-rayservice.yaml"
LAUNCHER = CLUSTER / "ray-cluster-launcher.yaml"
MULTINODE = CLUSTER / "local-multinode.sh"

YAML_FILES = sorted([*CLUSTER.glob("*.yaml"), *CLUSTER.glob("*.yml")])
TEXT_FILES = sorted(p for p in CLUSTER.iterdir() if p.is_file())

SECRET_NAMES = ("DATABASE_URL", "FORGE_MASTER_KEY", "OPENAI_API_KEY")
SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9]"),  # OpenAI-style keys
    re.compile(r"postgres(?:ql)?(?:\+\w+)?://[^$\s]*:[^@\s]*@"),  # a URL with a password
]
SERVE_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # Ray's default; `forge up`'s 2 s is for a single node only.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "30",
    # the platform's own request ids, outside Serve's request-id middleware
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "gateway.request_ids:serve_http_middlewares",
    # HAProxy's stats and metrics listeners on loopback only (serve/haproxy_shim.py)
    "FORGE_HAPROXY_HOST": "127.0.0.1",
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _validate_serve_config(config: dict[str, Any]) -> Any:
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(config)


def _pod_containers(rayservice: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    return [(name, c) for name, g in groups for c in g["template"]["spec"]["containers"]]


# --- every file -------------------------------------------------------------------------


def test_cluster_dir_has_the_expected_files() -> None:
    for path in (SERVE_CONFIG, RAYSERVICE, LAUNCHER, MULTINODE, CLUSTER / "README.md"):
        assert path.is_file(), path


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_yaml_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path.name} has no YAML document"
    assert all(isinstance(d, dict) for d in docs)


def test_secret_patterns_catch_inline_secrets() -> None:
    # Built at runtime so this file itself holds nothing a secret scanner would flag.
    key = "sk-" + "proj" + "A1b2C3"
    url = "postgresql+asyncpg://forge:" + "hunter2" + "@db:5432/forge"
    assert SECRET_PATTERNS[0].search(key)
    assert SECRET_PATTERNS[1].search(url)
    assert not SECRET_PATTERNS[1].search("postgresql+asyncpg://forge@db:5432/forge")
    assert not any(p.search('DATABASE_URL="$DATABASE_URL"') for p in SECRET_PATTERNS)


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: p.name)
def test_no_inline_secrets(path: Path) -> None:
    text = path.read_text()
    for pattern in SECRET_PATTERNS:
        match = pattern.search(text)
        assert match is None, f"{path.name}: secret-looking value {match.group(0)!r}"


# --- serve-config.yaml ------------------------------------------------------------------


def test_serve_config_matches_rays_schema() -> None:
    schema = _validate_serve_config(_load(SERVE_CONFIG))
    assert schema.http_options.host == "0.0.0.0"
    assert schema.http_options.port == 8000
    [app] = schema.applications
    from serve.constants import APP_NAME

    assert app.name == APP_NAME
    assert app.route_prefix == "/"
    assert app.runtime_env == {}, "secrets and env belong on the nodes, not in runtime_env"


def test_serve_config_import_path_resolves() -> None:
    [app] = _load(SERVE_CONFIG)["applications"]
    module_name, _, attr = app["import_path"].partition(":")
    assert (module_name, attr) == ("serve.app", "app_builder")
    builder = getattr(importlib.import_module(module_name), attr)
    assert callable(builder)


def test_serve_config_platform_config_exists() -> None:
    [app] = _load(SERVE_CONFIG)["applications"]
    config = Path(app["args"]["config"])
    assert not config.is_absolute()
    assert (ROOT / config).is_file(), f"{config} is not a file under the repo root"
    from forge.config import load_config

    load_config(ROOT / config)


# --- kuberay-rayservice.yaml ------------------------------------------------------------


def test_rayservice_embeds_the_same_application() -> None:
    rayservice = _load(RAYSERVICE)
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice["kind"] == "RayService"
    serve_config_v2 = rayservice["spec"]["serveConfigV2"]
    assert isinstance(serve_config_v2, str), "serveConfigV2 is a YAML string"
    embedded = yaml.safe_load(serve_config_v2)
    schema = _validate_serve_config(embedded)
    [app] = schema.applications
    assert app.import_path == "serve.app:app_builder"
    assert embedded["applications"] == _load(SERVE_CONFIG)["applications"]
    assert embedded["http_options"] == _load(SERVE_CONFIG)["http_options"]


def test_rayservice_pods_get_secrets_from_the_secret_and_serve_env() -> None:
    rayservice = _load(RAYSERVICE)
    containers = _pod_containers(rayservice)
    assert {name for name, _ in containers} >= {"head", "cpu"}
    for group, container in containers:
        assert container["image"] == "promptforge:latest"
        env = {e["name"]: e for e in container["env"]}
        for name, value in SERVE_ENV.items():
            assert env[name].get("value") == value, (group, name)
        assert env["RAY_SERVE_HAPROXY_BINARY_PATH"]["value"].endswith("/bin/forge-haproxy")
        for name in SECRET_NAMES:
            assert "value" not in env[name], f"{group}: {name} must come from the Secret"
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("promptforge-secrets", name), group
        resources = container["resources"]
        assert resources["requests"] and resources["limits"], group


def test_rayservice_has_no_runtime_env_vars() -> None:
    embedded = yaml.safe_load(_load(RAYSERVICE)["spec"]["serveConfigV2"])
    for app in embedded["applications"]:
        assert "env_vars" not in app.get("runtime_env", {}), "stored in plain text in the GCS"


def test_rayservice_gpu_group_is_documented_but_off() -> None:
    text = RAYSERVICE.read_text()
    assert "#               nvidia.com/gpu: 1" in text
    groups = _load(RAYSERVICE)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["cpu"]


# --- ray-cluster-launcher.yaml ----------------------------------------------------------


def test_launcher_config_matches_rays_schema() -> None:
    import jsonschema
    import ray.autoscaler

    config = _load(LAUNCHER)
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]


def test_launcher_installs_the_project_and_starts_ray_on_6380() -> None:
    config = _load(LAUNCHER)
    setup = "\n".join(config["setup_commands"])
    assert "torch==2.13.0" in setup
    assert "pip install -q -e" in setup
    head = "\n".join(config["head_start_ray_commands"])
    worker = "\n".join(config["worker_start_ray_commands"])
    assert "ray start --head --port=6380" in head
    assert "ray start --address=$RAY_HEAD_IP:6380" in worker
    for commands in (head, worker):
        assert "6379" not in commands
        for name, value in SERVE_ENV.items():
            assert f"{name}={value}" in commands
        assert "RAY_SERVE_HAPROXY_BINARY_PATH=$HOME/promptforge-venv/bin/forge-haproxy" in commands


# --- local-multinode.sh -----------------------------------------------------------------


def test_multinode_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(MULTINODE)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_multinode_script_exports_env_before_starting_ray() -> None:
    text = MULTINODE.read_text()
    first_start = text.index('ray" start')
    for name, value in SERVE_ENV.items():
        exported = re.search(
            rf"export {name}=({re.escape(value)}|\$\{{{name}:-{re.escape(value)}\}})\n", text
        )
        assert exported and exported.start() < first_start, name
    assert 'cd "$(dirname "$0")/.."' in text
    assert "trap cleanup EXIT" in text
    assert '--port="$GCS_PORT"' in text and "GCS_PORT=${FORGE_GCS_PORT:-6380}" in text
    assert 'ray" stop' not in text  # it would stop every Ray of this user, not just these
    assert 'RAY_ADDRESS="$ADDRESS" "$BIN/forge" up' in text
