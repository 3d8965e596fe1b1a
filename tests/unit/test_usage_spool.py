"""The usage spool: what a replica owes the ledger survives that replica's SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from forge.usage import UsageEvent
from gateway.usage_shipper import UsageShipper
from gateway.usage_spool import UsageSpool, read_records


def event(request_id: str, **update: object) -> UsageEvent:
    base = UsageEvent(
        request_id=request_id,
        created_at=datetime.now(UTC),
        key_id="k",
        endpoint="chat/completions",
        model="m",
        provider="p",
        provider_model="pm",
        stream=True,
        prompt_tokens=5,
        completion_tokens=7,
        cost_usd=0.002,
        latency_ms=3.0,
        status="ok",
        http_status=200,
    )
    return base.model_copy(update=update)


def started(request_id: str) -> UsageEvent:
    return event(
        request_id,
        status="interrupted",
        http_status=0,
        prompt_tokens=0,
        completion_tokens=0,
        cost_usd=0.0,
    )


def run_replica_then_sigkill(directory: Path) -> None:
    """A real process spools a finished call, an acknowledged one, and two calls in
    flight (one with progress), and is SIGKILLed without any chance to clean up."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from tests.unit.test_usage_spool import event, started
        from gateway.usage_spool import UsageSpool
        spool = UsageSpool(Path({str(directory)!r}))
        spool.open()
        spool.started(started("acked")); spool.finished(event("acked"))
        spool.acknowledged(1)
        spool.started(started("done")); spool.finished(event("done"))
        spool.started(started("mid-stream"))
        spool.progress("mid-stream", 16, 0.0005)
        spool.progress("mid-stream", 32, 0.001)
        spool.started(started("no-answer-yet"))
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_a_dead_replicas_spool_is_taken_over_with_interrupted_calls(tmp_path):
    run_replica_then_sigkill(tmp_path)
    taker = UsageSpool(tmp_path)
    taker.open()
    [orphans] = taker.take_orphans()
    by_id = {r.request_id: r for r in orphans.records}
    # "acked" may come back too: its segment was still open. The ledger stores it once.
    assert set(by_id) >= {"done", "mid-stream", "no-answer-yet"}
    assert by_id["done"].status == "ok" and by_id["done"].completion_tokens == 7
    mid = by_id["mid-stream"]
    assert (mid.status, mid.completion_tokens, mid.cost_usd) == ("interrupted", 32, 0.001)
    assert mid.usage_estimated and mid.http_status == 0
    assert by_id["no-answer-yet"].completion_tokens == 0
    assert taker.take_orphans() == []  # one taker at a time: the lock is held
    taker.release_orphans(orphans)
    assert {p.name.split(".")[0] for p in tmp_path.iterdir()} == {taker.owner}
    taker.close()
    assert list(tmp_path.iterdir()) == []  # nothing owed: nothing left


def test_a_living_replicas_spool_is_left_alone(tmp_path):
    alive = UsageSpool(tmp_path)
    alive.open()
    alive.finished(event("r1"))
    other = UsageSpool(tmp_path)
    other.open()
    assert other.take_orphans() == []
    alive.close()  # still owes r1: its file stays for a successor
    [orphans] = other.take_orphans()
    assert [r.request_id for r in orphans.records] == ["r1"]


def test_segments_are_deleted_once_acknowledged_and_ended(tmp_path):
    spool = UsageSpool(tmp_path, segment_bytes=2000)
    spool.open()
    spool.started(started("long"))  # a long stream keeps its segment until it ends
    for i in range(20):
        spool.started(started(f"r{i}"))
        spool.finished(event(f"r{i}"))
    segments = lambda: sorted(tmp_path.glob("*.spool"))  # noqa: E731
    assert len(segments()) > 3
    spool.acknowledged(20)
    assert len(segments()) == 2  # the one where "long" started, and the current one
    spool.finished(event("long"))
    spool.acknowledged(1)
    assert len(segments()) == 1
    assert spool.owed == 0


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "x.000000.spool"
    whole = b"f" + event("whole").model_dump_json().encode() + b"\n"
    path.write_bytes(whole + b"f" + event("torn").model_dump_json().encode()[:40])
    assert [r.request_id for r in read_records([path])] == ["whole"]


async def test_the_shipper_replays_orphans_through_its_own_spool(tmp_path):
    run_replica_then_sigkill(tmp_path)
    written: list[UsageEvent] = []

    async def sink(batch: list[UsageEvent]) -> int:
        written.extend(batch)
        return len(batch)

    spool = UsageSpool(tmp_path)
    spool.open()
    shipper = UsageShipper(sink, spool=spool, flush_interval_s=0.01, recover_interval_s=0.01)
    shipper.start()  # its background loop looks for dead replicas' spools
    for _ in range(200):
        if {"done", "mid-stream", "no-answer-yet"} <= {e.request_id for e in written}:
            break
        await asyncio.sleep(0.02)
    assert {"done", "mid-stream", "no-answer-yet"} <= {e.request_id for e in written}
    assert shipper.recovered >= 3
    assert shipper.state()["recovered_from_dead_replicas"] == shipper.recovered
    await shipper.close()
    assert list(tmp_path.iterdir()) == []


async def test_replayed_records_reach_the_ledger_once_on_each_database(tmp_path, engine):
    """The dead replica's records (one of them already shipped by it before it died)
    are written by the successor exactly once, on SQLite and on PostgreSQL."""
    from sqlalchemy import select

    from actors.usage_recorder import UsageStore
    from forge.db.schema import UsageRecord

    store = UsageStore(engine)
    await store.write([event("acked")])  # what the dead replica had shipped
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    run_replica_then_sigkill(spool_dir)
    spool = UsageSpool(spool_dir)
    spool.open()
    shipper = UsageShipper(store.write, spool=spool, flush_interval_s=0.01)
    assert shipper.recover() >= 3
    assert await shipper.flush()
    async with engine.connect() as conn:
        rows = {r.request_id: r for r in await conn.execute(select(UsageRecord))}
    assert set(rows) == {"acked", "done", "mid-stream", "no-answer-yet"}
    assert rows["mid-stream"].status == "interrupted" and rows["mid-stream"].completion_tokens == 32
    await shipper.close()
    assert list(spool_dir.iterdir()) == []
