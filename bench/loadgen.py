"""Closed-loop load against an OpenAI-compatible `/v1/chat/completions`, plus CPU and
memory of the process trees being measured (read from /proc)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
                ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / _TICK


def tree_rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            pass
    return total / 2**20


@dataclass
class RunResult:
    label: str
    n: int
    c: int
    stream: bool
    wall_s: float
    latencies_ms: list[float] = field(repr=False)
    ttft_ms: list[float] = field(repr=False)
    errors: int
    cpu_s: float | None = None

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s

    def summary(self) -> dict[str, float | int | str | None]:
        out: dict[str, float | int | str | None] = {
            "label": self.label,
            "c": self.c,
            "n": self.n,
            "stream": self.stream,
            "rps": round(self.rps, 1),
            "errors": self.errors,
            "p50_ms": round(percentile(self.latencies_ms, 50), 2),
            "p99_ms": round(percentile(self.latencies_ms, 99), 2),
        }
        if self.stream:
            out["ttft_p50_ms"] = round(percentile(self.ttft_ms, 50), 2)
        if self.cpu_s is not None:
            out["cpu_ms_per_req"] = round(1000 * self.cpu_s / max(len(self.latencies_ms), 1), 2)
        return out


async def run_load(
    label: str,
    url: str,
    key: str,
    model: str,
    *,
    n: int,
    c: int,
    stream: bool = False,
    watch_pid: int | None = None,
    warmup: int | None = None,
) -> RunResult:
    """Send ``n`` requests from ``c`` workers; measures latency, TTFT and the CPU time the
    watched process tree spent meanwhile."""
    endpoint = url.rstrip("/") + "/v1/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": "bench me please"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    payload = orjson.dumps(body)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    ttfts: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=c, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(record: bool) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with session.post(endpoint, data=payload, headers=headers) as resp:
                    if resp.status != 200:
                        await resp.read()
                        errors += record
                        return
                    if stream:
                        first = None
                        async for line in resp.content:
                            if first is None and line.startswith(b"data: {"):
                                first = time.perf_counter()
                        if record and first is not None:
                            ttfts.append((first - t0) * 1000)
                    else:
                        orjson.loads(await resp.read())
            except aiohttp.ClientError:
                errors += record
                return
            if record:
                latencies.append((time.perf_counter() - t0) * 1000)

        async def worker(count: int, record: bool) -> None:
            for _ in range(count):
                await one(record)

        warm = warmup if warmup is not None else 2 * c
        await asyncio.gather(*(worker(warm // c + 1, False) for _ in range(c)))
        pids = process_tree(watch_pid) if watch_pid else []
        cpu0 = tree_cpu_seconds(pids)
        t0 = time.perf_counter()
        per = [n // c + (i < n % c) for i in range(c)]
        await asyncio.gather(*(worker(k, True) for k in per))
        wall = time.perf_counter() - t0
        cpu = tree_cpu_seconds(pids) - cpu0 if pids else None
    return RunResult(label, n, c, stream, wall, latencies, ttfts, errors, cpu)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
