"""Bounded load with a fault in the middle, and the usage ledger's invariants after it.

Shared by the single-node fault tests (SQLite) and the two-node ones (PostgreSQL).
Invariants, checked against what the clients saw and what the upstream received:
- every response delivered to a client has exactly one record;
- every upstream call that was started has a record (ok, error, or ``interrupted``);
- a record for a request that no client received is marked so (never ``ok``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx2
from sqlalchemy import select

from forge.db.engine import make_engine, make_sessionmaker
from forge.db.schema import UsageRecord
from forge.keys import KeyStore
from tests.fakes.openai_upstream import FakeOpenAI


@dataclass
class Outcomes:
    delivered: dict[str, str] = field(default_factory=dict)  # request id -> marker
    failed: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)  # (s after fault, what)
    sent_after_fault: int = 0
    sent_markers: set[str] = field(default_factory=set)
    fault_at: float = float("inf")

    def failed_later_than(self, seconds: float) -> list[tuple[float, str]]:
        """Failures of requests sent more than ``seconds`` after the fault."""
        return [(dt, what) for dt, what in self.failures if dt > seconds]


async def new_key(db_url: str, name: str = "ledger-faults") -> tuple[str, str]:
    engine = make_engine(db_url)
    try:
        created = await KeyStore(make_sessionmaker(engine)).create_key(name)
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
    after_fault = sent > out.fault_at
    out.sent_after_fault += after_fault
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
    if after_fault:
        out.failures.append((sent - out.fault_at, outcome))


async def load_with_fault(
    url: str,
    key: str,
    models: Sequence[str],
    fault: Callable[[], Awaitable[None]],
    *,
    fault_after_s: float,
    run_s: float,
) -> Outcomes:
    """Two clients per model in a loop for ``run_s``; ``fault`` runs after ``fault_after_s``."""
    out = Outcomes()
    deadline = time.monotonic() + run_s

    async def worker(model: str) -> None:
        async with httpx2.AsyncClient(timeout=30) as http:
            while time.monotonic() < deadline:
                await one_request(http, url, key, model, out)
                await asyncio.sleep(0.01)

    workers = [asyncio.create_task(worker(m)) for m in (*models, *models)]
    await asyncio.sleep(fault_after_s)
    await fault()
    out.fault_at = time.monotonic()
    await asyncio.gather(*workers)
    return out


def upstream_calls(upstream: FakeOpenAI, since: int, out: Outcomes) -> set[str]:
    """Markers of the load's requests that reached the upstream."""
    return {
        m
        for r in upstream.requests[since:]
        for msg in r["body"].get("messages", ())
        if isinstance(m := msg.get("content"), str) and m in out.sent_markers
    }


def check_ledger(
    db_url: str,
    upstream: FakeOpenAI,
    key_id: str,
    upstream_before: int,
    out: Outcomes,
    *,
    expect_interrupted: bool = False,
    wait_s: float = 60.0,
) -> list[dict]:
    """The three invariants (waiting up to ``wait_s`` for a successor or a surviving replica
    to replay a dead replica's spool). ``expect_interrupted``: the fault cut calls in flight,
    streams among them, so some records must be ``interrupted`` with tokens counted."""
    started = upstream_calls(upstream, upstream_before, out)
    assert out.delivered and started, "no load reached the platform"

    deadline = time.monotonic() + wait_s
    while True:
        rows = asyncio.run(rows_of(db_url, key_id))
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
    if expect_interrupted:
        assert interrupted, "the fault hit calls in flight: they must be traced as interrupted"
        assert any(r["completion_tokens"] > 0 for r in interrupted if r["stream"])
    return rows
