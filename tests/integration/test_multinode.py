"""Two Ray nodes on one machine, as `cluster/local-multinode.sh` starts them (token
authentication on), PromptForge on both with PostgreSQL as its store: a gateway replica
on each node, a request through each node's ingress; then, under bounded load, a gateway
replica, the usage recorder, the upstream and finally the worker node are stopped in
turn, and the usage ledger keeps its invariants (tests/integration/ledger.py).

The cluster is this module's own (`ray start --block` per node, stopped by the script),
beside the session's cluster; the two never meet.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import openai
import pytest
import yaml

from serve.processes import command_line, descendants, is_running
from tests.conftest import UPSTREAM_KEY, _drop_postgres, _fresh_postgres
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import free_port
from tests.integration.ledger import Outcomes, check_ledger, load_with_fault, new_key, rows_of
from tests.live_platform import wait_until_ready

pytestmark = [pytest.mark.ray, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cluster" / "local-multinode.sh"
MODELS = ("gpt-test", "slow")


@dataclass
class TwoNodes:
    head_url: str
    worker_url: str
    db_url: str
    upstream: FakeOpenAI
    script: subprocess.Popen
    log: Path

    def node_pid(self, role: str) -> int:
        """The `ray start --block` process of the head or the worker node."""
        flag = "--head" if role == "head" else "--address="
        for pid in descendants(self.script.pid):
            cmd = command_line(pid)
            if " start " in cmd and "--block" in cmd and flag in cmd:
                return pid
        raise AssertionError(f"no {role} node under the script:\n{self.log.read_text()}")

    def processes(self, role: str, title: str) -> list[int]:
        """Processes of one node whose command line contains ``title``."""
        return [pid for pid in descendants(self.node_pid(role)) if title in command_line(pid)]


GATEWAY = "ServeReplica:promptforge:gateway"
RECORDER = "ControlPlaneActor"  # hosts the usage recorder


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    tmp = tmp_path_factory.mktemp("multinode")
    made = asyncio.run(_fresh_postgres())
    if made is None:
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is not running (.ci/run starts it)")
    db_url, db_name = made
    upstream = FakeOpenAI(api_key=UPSTREAM_KEY).start()
    head_port, worker_port = free_port(), free_port()
    config = {
        "server": {"port": head_port},
        "providers": [
            {
                "name": "fake",
                "type": "openai_compatible",
                "base_url": upstream.base_url,
                "api_key_env": "FAKE_UPSTREAM_KEY",
            }
        ],
        "models": [
            {"name": "gpt-test", "provider": "fake", "model": "gpt-fake"},
            {"name": "slow", "provider": "fake", "model": "slow-stream"},
        ],
        "gateway": {"replicas": 2, "max_replicas_per_node": 1, "drain_timeout_s": 2},
    }
    (tmp / "forge.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "FORGE_DATA_DIR": str(tmp / "data"),  # one disk: a survivor can ship a dead node's spool
        "DATABASE_URL": db_url,
        "FAKE_UPSTREAM_KEY": UPSTREAM_KEY,
        "FORGE_GCS_PORT": str(free_port()),
        "FORGE_WORKER_HTTP_PORT": str(worker_port),
        "FORGE_WORKER_STATS_PORT": str(free_port()),
        "FORGE_WORKER_METRICS_PORT": str(free_port()),
        "FORGE_HEAD_AGENT_PORT": str(free_port()),
        "FORGE_WORKER_AGENT_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        # the fallback proxy's, never another cluster's (serve/local_ray.py)
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
        # HAProxy on the head stops routing to a dead node's replica by itself (a refused
        # connection is retried on the other); a short drain keeps the stop quick.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("FORGE_MASTER_KEY", None)
    log = tmp / "multinode.log"
    script = subprocess.Popen(
        ["bash", str(SCRIPT), "--config", str(tmp / "forge.yaml")],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    nodes = TwoNodes(
        f"http://127.0.0.1:{head_port}",
        f"http://127.0.0.1:{worker_port}",
        db_url,
        upstream,
        script,
        log,
    )
    try:
        for url in (nodes.head_url, nodes.worker_url):
            if not wait_until_ready(url, 240):
                pytest.fail(f"{url} never became ready:\n{log.read_text()[-4000:]}")
        ours = set(descendants(script.pid))
        for port in (head_port, worker_port):
            owners = _listeners(port)
            if not owners & ours:
                pytest.fail(f"port {port} is held by another process: {_ss(port)}")
        yield nodes
    finally:
        script.send_signal(signal.SIGTERM)  # forge up drains, then both nodes stop
        try:
            script.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait(30)
        upstream.stop()
        asyncio.run(_drop_postgres(db_name))


def test_a_gateway_replica_on_each_node_and_each_node_serves(two_nodes: TwoNodes) -> None:
    assert two_nodes.processes("head", GATEWAY) and two_nodes.processes("worker", GATEWAY)
    key, key_id = asyncio.run(new_key(two_nodes.db_url, "multinode"))
    ids = set()
    for url in (two_nodes.head_url, two_nodes.worker_url):
        client = openai.OpenAI(api_key=key, base_url=url + "/v1", max_retries=0)
        try:
            reply = client.chat.completions.with_raw_response.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIStatusError as exc:
            raise AssertionError(f"{url}: {exc}\n{_who_answered(exc.response)}") from exc
        assert reply.parse().choices[0].message.content
        ids.add(reply.headers["x-request-id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = asyncio.run(rows_of(two_nodes.db_url, key_id))
        if {r["request_id"] for r in rows} >= ids:
            break
        time.sleep(0.5)
    assert {r["request_id"] for r in rows} == ids


def _who_answered(response: httpx2.Response) -> str:
    """Which Ray session's Serve logs mention the request: a diagnosis for a refusal
    from a gateway that should have known the key."""
    request_id = response.headers.get("x-request-id", "")
    found = subprocess.run(
        ["grep", "-rl", "--include=*.log", request_id, "/tmp/ray"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    port = response.request.url.port or 80
    return f"request {request_id} in: {found or 'no log'}\nlistening: {_ss(port)}"


def _ss(port: int) -> str:
    return subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout.strip()


def _listeners(port: int) -> set[int]:
    """The pids listening on ``port``."""
    return {int(pid) for pid in re.findall(r"pid=(\d+)", _ss(port))}


def run_phase(two_nodes: TwoNodes, fault, *, expect_interrupted: bool = False) -> Outcomes:
    """Bounded load through the head's ingress with ``fault`` in the middle; the ledger's
    invariants after it."""
    key, key_id = asyncio.run(new_key(two_nodes.db_url, "multinode-faults"))
    before = len(two_nodes.upstream.requests)
    out = asyncio.run(
        load_with_fault(two_nodes.head_url, key, MODELS, fault, fault_after_s=2.5, run_s=7.0)
    )
    check_ledger(
        two_nodes.db_url,
        two_nodes.upstream,
        key_id,
        before,
        out,
        expect_interrupted=expect_interrupted,
        wait_s=90,
    )
    return out


def test_faults_in_turn_on_postgres(two_nodes: TwoNodes) -> None:
    """A gateway replica, the recorder, the upstream, then the worker node: each under
    load, each leaving the ledger whole."""

    # 1. The head's gateway replica, SIGKILLed: HAProxy sends new requests to the other.
    async def kill_head_gateway() -> None:
        for pid in two_nodes.processes("head", GATEWAY):
            os.kill(pid, signal.SIGKILL)

    out = run_phase(two_nodes, kill_head_gateway)
    assert not out.failed_later_than(0.5), out.failures
    assert wait_until_ready(two_nodes.head_url, 120), "the gateway replica was not replaced"

    # 2. The usage recorder, SIGKILLed: Ray restarts it; no client notices.
    recorders = two_nodes.processes("head", RECORDER) + two_nodes.processes("worker", RECORDER)
    assert len(recorders) == 1, recorders

    async def kill_recorder() -> None:
        os.kill(recorders[0], signal.SIGKILL)

    out = run_phase(two_nodes, kill_recorder)
    assert out.failed == 0, out.failures

    # 3. The upstream, gone for 1.5 s: clean 502s (or an error event in a cut stream).
    back = threading.Timer(1.5, two_nodes.upstream.restart)

    async def upstream_outage() -> None:
        await asyncio.to_thread(two_nodes.upstream.stop)
        back.start()

    try:
        out = run_phase(two_nodes, upstream_outage)
    finally:
        if back.ident is not None:
            back.join(10)
    assert out.failures
    assert all(what.startswith(("502", "200")) for _, what in out.failures), out.failures
    assert not out.failed_later_than(2.5), out.failures

    # 4. The worker node, stopped (its raylet, its replicas, its HAProxy): requests
    # through the head keep succeeding, and the survivor ships the dead node's spool.
    worker = two_nodes.node_pid("worker")
    doomed = [worker, *descendants(worker)]  # every process of the worker node

    async def stop_worker_node() -> None:
        os.kill(worker, signal.SIGTERM)

    out = run_phase(two_nodes, stop_worker_node)
    assert not out.failed_later_than(0.5), out.failures
    assert out.sent_after_fault > 20
    deadline = time.monotonic() + 30
    while (survivors := [p for p in doomed if is_running(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not survivors, [command_line(p)[:120] for p in survivors]
    with pytest.raises(httpx2.HTTPError):
        httpx2.get(two_nodes.worker_url + "/health/ready", timeout=5)
