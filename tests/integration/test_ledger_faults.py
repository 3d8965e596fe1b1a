"""The usage ledger under faults: the gateway replica SIGKILLed under load.

Invariants, checked against what the clients saw and what the upstream received:
- every response delivered to a client has exactly one record;
- every upstream call that was started has a record (ok, error, or ``interrupted``);
- a record for a request that no client received is marked so (never ``ok``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass, field

import httpx2
import pytest
import ray
from sqlalchemy import select

from forge.db.engine import make_engine, make_sessionmaker
from forge.db.schema import UsageRecord
from forge.keys import KeyStore
from tests.live_platform import wait_until_ready

pytestmark = pytest.mark.ray

MODELS = ("gpt-inproc", "gpt-test", "slow-stream-inproc")  # in the gateway, via a proxy


@dataclass
class Outcomes:
    delivered: dict[str, str] = field(default_factory=dict)  # request id -> marker
    failed: int = 0
    failed_after_kill: list[tuple[float, str]] = field(default_factory=list)
    sent_after_kill: int = 0
    sent_markers: set[str] = field(default_factory=set)
    killed_at: float = float("inf")


def gateway_replica_pids() -> list[int]:
    pids = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == "serve" and "#gateway#" in actor["name"]:
            handle = ray.get_actor(actor["name"], namespace="serve")
            pids.append(ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=30))
    assert pids, "no gateway replica found"
    return pids


def gateway_replica_pid() -> int:
    return gateway_replica_pids()[0]


async def new_key(db_url: str) -> tuple[str, str]:
    engine = make_engine(db_url)
    try:
        created = await KeyStore(make_sessionmaker(engine)).create_key("ledger-faults")
        return created.key, created.info.id
    finally:
        await engine.dispose()


async def rows_of(db_url: str, key_id: str) -> list[dict]:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(UsageRecord).where(UsageRecord.key_id == key_id))
            return [dict(r) for r in rows.mappings()]
    finally:
        await engine.dispose()


async def one_request(
    http: httpx2.AsyncClient, url: str, key: str, model: str, out: Outcomes
) -> None:
    marker = f"ledger-{uuid.uuid4().hex}"
    out.sent_markers.add(marker)
    sent = time.monotonic()
    after_kill = sent > out.killed_at
    out.sent_after_kill += after_kill
    outcome = ""
    stream = model.startswith("slow")
    body = {"model": model, "messages": [{"role": "user", "content": marker}], "stream": stream}
    headers = {"authorization": f"Bearer {key}"}
    try:
        async with http.stream(
            "POST", url + "/v1/chat/completions", json=body, headers=headers
        ) as resp:
            data = await resp.aread()
            complete = resp.status_code == 200 and (
                not stream or data.rstrip().endswith(b"data: [DONE]")
            )
            if complete and b'"error"' not in data:
                out.delivered[resp.headers["x-request-id"]] = marker
                return
            outcome = f"{resp.status_code} {data[:200]!r}"
    except httpx2.HTTPError as exc:
        outcome = repr(exc)
    out.failed += 1
    if after_kill:
        out.failed_after_kill.append((sent - out.killed_at, outcome))


async def load_with_kill(url: str, key: str, kill_after_s: float, run_s: float) -> Outcomes:
    out = Outcomes()
    deadline = time.monotonic() + run_s

    async def worker(model: str) -> None:
        async with httpx2.AsyncClient(timeout=30) as http:
            while time.monotonic() < deadline:
                await one_request(http, url, key, model, out)
                await asyncio.sleep(0.01)

    workers = [asyncio.create_task(worker(m)) for m in MODELS * 2]
    await asyncio.sleep(kill_after_s)
    os.kill(await asyncio.to_thread(gateway_replica_pid), signal.SIGKILL)
    out.killed_at = time.monotonic()
    await asyncio.gather(*workers)
    return out


def check_ledger(
    platform, fake_openai, key_id: str, upstream_before: int, out: Outcomes, *, sole: bool
) -> None:
    """The three invariants; with the ``sole`` replica killed, also that its calls in
    flight (always some, streams among them) were traced as interrupted."""
    started = {
        m
        for r in fake_openai.requests[upstream_before:]
        for msg in r["body"].get("messages", ())
        if isinstance(m := msg.get("content"), str) and m in out.sent_markers
    }
    assert out.delivered and started, "no load reached the platform"

    # A successor (or the surviving replica) replays the dead replica's spool within
    # a few seconds.
    deadline = time.monotonic() + 60
    while True:
        rows = asyncio.run(rows_of(platform.db_url, key_id))
        ids = {r["request_id"] for r in rows}
        if (set(out.delivered) <= ids and len(rows) >= len(started)) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.5)

    by_id = {r["request_id"]: r for r in rows}
    missing = set(out.delivered) - set(by_id)
    assert not missing, f"{len(missing)} delivered responses without a record"
    assert len(rows) == len(by_id)  # exactly one each (the key is the primary key)
    assert len(rows) >= len(started), "an upstream call left neither a record nor a trace"
    undelivered = [r for r in rows if r["request_id"] not in out.delivered]
    assert all(r["status"] != "ok" for r in undelivered), [r["status"] for r in undelivered]
    interrupted = [r for r in rows if r["status"] == "interrupted"]
    assert all(r["usage_estimated"] for r in interrupted)
    if not sole:  # with two replicas the killed one may have had no stream in flight
        return
    assert interrupted, "the kill hit calls in flight: they must be traced as interrupted"
    assert any(r["completion_tokens"] > 0 for r in interrupted if r["stream"])


def test_a_sigkilled_gateway_replica_loses_no_record(platform, fake_openai):
    """One replica: Serve replaces it, and the replacement replays its spool."""
    key, key_id = asyncio.run(new_key(platform.db_url))
    upstream_before = len(fake_openai.requests)
    out = asyncio.run(load_with_kill(platform.url, key, kill_after_s=2.5, run_s=6.0))
    assert wait_until_ready(platform.url, 90), "the gateway replica was not replaced"
    check_ledger(platform, fake_openai, key_id, upstream_before, out, sole=True)


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
        key, key_id = asyncio.run(new_key(platform.db_url))
        upstream_before = len(fake_openai.requests)
        out = asyncio.run(load_with_kill(platform.url, key, kill_after_s=2.5, run_s=6.0))
        assert out.sent_after_kill > 20
        # HAProxy retries a refused connection on the other replica (retry-on
        # conn-failure), so nothing sent after the kill fails, with one exception seen
        # once under CI load: a request sent within a moment of the kill, likely over a
        # pooled connection to the dying replica, failed; HAProxy does not retry that
        # (the request may have reached the replica). Requests from 0.5 s on: none.
        late = [(dt, o) for dt, o in out.failed_after_kill if dt > 0.5]
        assert not late, late
        check_ledger(platform, fake_openai, key_id, upstream_before, out, sole=False)
    finally:
        launcher.deploy(platform.config, "127.0.0.1", port)
        assert wait_until_ready(platform.url, 120)
