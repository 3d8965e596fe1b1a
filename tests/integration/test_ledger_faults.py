"""The usage ledger under faults on one node (SQLite): the gateway replica SIGKILLed, the
usage recorder SIGKILLed, the upstream gone, each under bounded load. The invariants are
in tests/integration/ledger.py; test_multinode.py runs the same faults on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import httpx2
import pytest
import ray

from actors.facets import running_facet
from tests.integration.ledger import check_ledger, load_with_fault, new_key
from tests.live_platform import wait_until_ready

pytestmark = pytest.mark.ray

MODELS = ("gpt-inproc", "gpt-test", "slow-stream-inproc")  # in the gateway, via a proxy


def actor_pid(handle: ray.actor.ActorHandle) -> int:
    return ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=30)


def gateway_replica_pids() -> list[int]:
    pids = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == "serve" and "#gateway#" in actor["name"]:
            pids.append(actor_pid(ray.get_actor(actor["name"], namespace="serve")))
    assert pids, "no gateway replica found"
    return pids


async def kill_a_gateway_replica() -> None:
    os.kill((await asyncio.to_thread(gateway_replica_pids))[0], signal.SIGKILL)


def test_a_sigkilled_gateway_replica_loses_no_record(platform, fake_openai):
    """One replica: Serve replaces it, and the replacement replays its spool."""
    key, key_id = asyncio.run(new_key(platform.db_url))
    upstream_before = len(fake_openai.requests)
    out = asyncio.run(
        load_with_fault(
            platform.url, key, MODELS, kill_a_gateway_replica, fault_after_s=2.5, run_s=6.0
        )
    )
    assert wait_until_ready(platform.url, 90), "the gateway replica was not replaced"
    check_ledger(
        platform.db_url, fake_openai, key_id, upstream_before, out, expect_interrupted=True
    )


def test_with_two_gateway_replicas_a_kill_fails_no_later_request(platform, fake_openai):
    """Two replicas (as configs/cluster.yaml runs): after one is SIGKILLed, every request
    that arrives succeeds (HAProxy retries a refused connection on the other replica),
    and the survivor ships the dead replica's records."""
    from serve import launcher

    port = int(platform.url.rsplit(":", 1)[1])
    two = platform.config.model_copy(
        update={"gateway": platform.config.gateway.model_copy(update={"replicas": 2})}
    )
    launcher.deploy(two, "127.0.0.1", port)
    try:
        deadline = time.monotonic() + 120
        while len(gateway_replica_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert wait_until_ready(platform.url, 90)
        a_revocation_reaches_both_replicas_within_a_second(platform)
        key, key_id = asyncio.run(new_key(platform.db_url))
        upstream_before = len(fake_openai.requests)
        out = asyncio.run(
            load_with_fault(
                platform.url, key, MODELS, kill_a_gateway_replica, fault_after_s=2.5, run_s=6.0
            )
        )
        assert out.sent_after_fault > 20
        # HAProxy retries a refused connection on the other replica (retry-on
        # conn-failure), so nothing sent after the kill fails, with one exception seen
        # once under CI load: a request sent within a moment of the kill, likely over a
        # pooled connection to the dying replica, failed; HAProxy does not retry that
        # (the request may have reached the replica). Requests from 0.5 s on: none.
        assert not out.failed_later_than(0.5)
        # The killed replica may have had no stream in flight: no interrupted trace required.
        check_ledger(platform.db_url, fake_openai, key_id, upstream_before, out)
    finally:
        launcher.deploy(platform.config, "127.0.0.1", port)
        assert wait_until_ready(platform.url, 120)


def a_revocation_reaches_both_replicas_within_a_second(platform) -> None:
    """Both replicas cache the key (for ``auth_cache_ttl_s``, 5 s); revoked through the
    admin API on one, it is refused by both within a second (pushed through the
    directory actor's key-change feed), not after the TTL."""
    admin = {"authorization": f"Bearer {platform.admin_key}"}
    with httpx2.Client(base_url=platform.url, timeout=10) as http:
        made = http.post("/admin/keys", json={"name": "revoked-soon"}, headers=admin)
        key, key_id = made.json()["key"], made.json()["info"]["id"]
        user = {"authorization": f"Bearer {key}"}
        assert all(http.get("/v1/models", headers=user).status_code == 200 for _ in range(40))
        assert http.delete(f"/admin/keys/{key_id}", headers=admin).status_code == 200
        time.sleep(1.0)
        codes = [http.get("/v1/models", headers=user).status_code for _ in range(40)]
    assert set(codes) == {401}, codes


def test_a_sigkilled_control_plane_fails_no_request_and_loses_no_record(platform, fake_openai):
    """The control plane hosts the usage recorder, the only writer (and the directory,
    the limits and the budget ledger): while Ray restarts it, shipments fail and the
    records wait in the replicas' spools; clients notice nothing."""
    recorder = running_facet("usage").handle
    before = actor_pid(recorder)

    async def kill_the_recorder() -> None:
        os.kill(before, signal.SIGKILL)

    key, key_id = asyncio.run(new_key(platform.db_url))
    upstream_before = len(fake_openai.requests)
    out = asyncio.run(
        load_with_fault(platform.url, key, MODELS, kill_the_recorder, fault_after_s=2.0, run_s=6.0)
    )
    assert out.failed == 0, out.failures
    assert actor_pid(recorder) != before, "the recorder was not restarted"
    check_ledger(platform.db_url, fake_openai, key_id, upstream_before, out)


def test_an_upstream_outage_gets_clean_errors_and_every_call_a_record(platform, fake_openai):
    """The upstream stops (streams in flight cut) and comes back 1.5 s later: requests in
    the outage get the platform's 502 (a cut stream an error event), never a 500 or a
    dropped connection; every call that reached the upstream has its record."""
    outage_s = 1.5
    back = threading.Timer(outage_s, fake_openai.restart)

    async def outage() -> None:
        await asyncio.to_thread(fake_openai.stop)
        back.start()

    key, key_id = asyncio.run(new_key(platform.db_url))
    upstream_before = len(fake_openai.requests)
    try:
        out = asyncio.run(
            load_with_fault(platform.url, key, MODELS, outage, fault_after_s=2.0, run_s=6.0)
        )
    finally:
        if back.ident is not None:  # started: the session's other tests need the upstream
            back.join(10)
    assert out.failures, "the outage failed nothing: did the upstream stop?"
    unclean = [(dt, what) for dt, what in out.failures if not what.startswith(("502", "200"))]
    assert not unclean, unclean
    assert all(b"error" in what.encode() for _, what in out.failures)
    assert not out.failed_later_than(outage_s + 1.0), "requests failed after the upstream was back"
    rows = check_ledger(platform.db_url, fake_openai, key_id, upstream_before, out)
    assert any(r["status"] == "error" for r in rows), "the failed calls left no error record"
