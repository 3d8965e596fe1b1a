"""`forge up` as a user runs it: its own Ray, a generated admin key, SIGTERM to stop."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import openai
import yaml

from serve.processes import command_line, descendants, listening_sockets
from tests.fakes.server import free_port


def mapped_files(pid: int) -> str:
    """What the process has mapped (its shared libraries among them)."""
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:  # gone meanwhile
        return ""


ROOT = Path(__file__).resolve().parents[2]
FORGE = str(Path(sys.executable).parent / "forge")


RAY_INTERNAL = ("ray::", "/ray/core/src/ray/", "/ray/dashboard/", "/ray/autoscaler/")


def is_ray_internal(pid: int) -> bool:
    """Ray's own processes (not HAProxy, which Serve starts, nor `forge up` itself)."""
    cmd = command_line(pid)
    return any(mark in cmd for mark in RAY_INTERNAL) and "haproxy" not in cmd


def wait_for(pattern: str, log: Path, proc: subprocess.Popen, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        assert proc.poll() is None, log.read_text()
        time.sleep(0.3)
    raise AssertionError(f"{pattern!r} not printed:\n{log.read_text()}")


def test_forge_up_serves_reports_status_and_stops_cleanly(tmp_path, fake_openai):
    port = free_port()
    config = {
        "server": {"port": port},
        "providers": [
            {
                "name": "fake",
                "type": "openai_compatible",
                "base_url": fake_openai.base_url,
                "api_key_env": "FAKE_UPSTREAM_KEY",
            }
        ],
        "models": [
            {"name": "gpt-test", "provider": "fake", "model": "gpt-fake"},
            {"name": "slow", "provider": "fake", "model": "slow-stream"},  # 200 x 20 ms
        ],
        "gateway": {"drain_timeout_s": 1.5},
    }
    (tmp_path / "forge.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "FORGE_DATA_DIR": str(tmp_path / "data"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("FORGE_MASTER_KEY", None)
    log = tmp_path / "forge.log"
    proc = subprocess.Popen(
        [FORGE, "up", "--config", str(tmp_path / "forge.yaml")],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    try:
        admin_key = wait_for(r"Admin key \(shown once.*\): (sk-forge-\S+)", log, proc, 120)[1]
        ray_address = wait_for(r"Ray cluster: (\S+)", log, proc, 5)[1]
        assert f"http://127.0.0.1:{port}/v1" in log.read_text()
        assert admin_key not in (tmp_path / "data" / "forge.db").read_bytes().decode("latin-1")

        created = httpx2.post(
            f"http://127.0.0.1:{port}/admin/keys",
            json={"name": "app"},
            headers={"authorization": f"Bearer {admin_key}"},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        client = openai.OpenAI(
            api_key=created.json()["key"], base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
        )
        reply = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content

        # Nothing listens beyond the configured host: HAProxy's statistics page and its
        # Prometheus port used to be on every interface (config: host 127.0.0.1).
        # Ray's own gRPC servers (GCS, raylet, workers, agents) bind every interface and
        # Ray 2.60 has no option against it: they are Ray's token-authenticated transport
        # (cluster/README.md: firewall them). Everything else must be on the host.
        by_pid = listening_sockets([proc.pid, *descendants(proc.pid)])
        sockets = set().union(*by_pid.values())
        assert ("127.0.0.1", port) in sockets
        for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
            assert ("127.0.0.1", int(env[name])) in sockets, (name, sockets)
        exposed = {
            (pid, address)
            for pid, addresses in by_pid.items()
            for address in addresses
            if address[0] not in ("127.0.0.1", "::1") and not is_ray_internal(pid)
        }
        # `forge up` is a Ray driver: its core worker's gRPC server is Ray's, too. (Matched by
        # pid, not by command line: a command line cut to a length depends on the checkout path.)
        driver_grpc = {(pid, a) for pid, a in exposed if pid == proc.pid}
        assert len(driver_grpc) <= 1
        others = {(command_line(pid), a) for pid, a in exposed - driver_grpc}
        assert not others, f"listening beyond the configured host: {others}"

        # The local head is ray.init's less the autoscaler monitor and the log monitor
        # (serve/local_ray.py); the replicas' logs are where the console says.
        commands = [command_line(pid) for pid in descendants(proc.pid)]
        assert not [c for c in commands if "monitor.py" in c], commands
        logs = Path(wait_for(r"Replica logs: (\S+)", log, proc, 5)[1])
        assert any(logs.glob("worker-*.out")), sorted(p.name for p in logs.iterdir())[:20]
        # and no process of the platform loaded pandas or pyarrow (serve/lean_workers.py):
        # Serve's and Ray's optional imports of them cost ~90 MiB a process
        loaded = {
            command_line(pid)[:60]
            for pid in [proc.pid, *descendants(proc.pid)]
            if any(lib in mapped_files(pid) for lib in ("/pandas/", "/pyarrow/"))
        }
        assert not loaded, loaded

        status = subprocess.run(
            [FORGE, "status", "--json"],
            capture_output=True,
            text=True,
            # The session's own cluster runs too: name this one, as a user with two would.
            env={**env, "RAY_ADDRESS": ray_address},
            timeout=120,
        )
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout[status.stdout.index("{") :])
        assert report["status"] == "RUNNING"
        assert report["deployments"]["gateway"]["replicas"] == {"RUNNING": 1}

        # SIGTERM with a stream in flight: drained, not cut (it used to be cut ~0.2 s
        # in): it runs until the 1.5-s drain timeout, then ends with an error event and
        # [DONE], and its usage record says why.
        children = descendants(proc.pid)
        assert children
        seen: list[str] = []
        with httpx2.stream(
            "POST",
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            headers={"authorization": f"Bearer {admin_key}"},
            timeout=60,
        ) as streamed:
            for line in streamed.iter_lines():
                if line:
                    seen.append(line)
                if len(seen) == 3:
                    proc.send_signal(signal.SIGTERM)
        assert seen[-1] == "data: [DONE]", seen[-3:]
        assert json.loads(seen[-2][6:])["error"]["code"] == "server_shutting_down"
        assert 20 < len(seen) < 150, len(seen)  # ~1.5 s of 20-ms chunks
        assert proc.wait(90) == 0, log.read_text()
        with sqlite3.connect(tmp_path / "data" / "forge.db") as db:
            rows = db.execute(
                "select status, error_code from usage_records where model = 'slow'"
            ).fetchall()
        assert rows == [("error", "server_shutting_down")]
        deadline = time.monotonic() + 10  # Ray's agents notice the raylet's end by polling
        while (survivors := [p for p in children if Path(f"/proc/{p}").exists()]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert not survivors, f"left running after stop: {[command_line(p) for p in survivors]}"
    finally:
        if proc.poll() is None:
            proc.kill()
