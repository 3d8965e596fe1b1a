"""Memory under a long steady load with hostile inputs: does anything in `forge up` grow?

    .venv/bin/python -m bench.soak_bench                 # 30 minutes (the issue's figure)
    .venv/bin/python -m bench.soak_bench --minutes 8     # a shorter look

Starts the mock upstream and `forge up` (as `bench.gateway_bench` does), then sends a
steady mix for the whole run: chat completions, streams, 5% requests with unknown keys
(each distinct), 1% requests naming 10 KB models (a 400 now) and distinct unknown model
names. Every 15 s it samples the resident memory of every process in `forge up`'s tree
(by name: gcs_server, raylet, the gateway replica, the actors, HAProxy, ...). The figure
is each process's growth per hour: a least-squares slope over the samples after the first
quarter of the run (warm-up), next to the run's requests/s. The goal: flat within noise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import aiohttp
import orjson

from bench.gateway_bench import FORGE_KEY, FORGE_PORT, start_forge, start_mock, stop
from bench.loadgen import process_tree

SAMPLE_EVERY_S = 15.0


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return "?"
    first = cmd[0].decode(errors="replace")
    if first.startswith("ray::"):  # Ray retitles a worker while it runs a method: ray::A.m
        return first.split()[0].split(".")[0]
    if "forge" in " ".join(c.decode(errors="replace") for c in cmd[:3]):
        return "forge up (driver)"
    return Path(first).name or "?"


def rss_by_process(root: int) -> dict[str, float]:
    """MiB per process name (processes of one name summed)."""
    out: dict[str, float] = defaultdict(float)
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        out[process_name(pid)] += rss_kb / 1024
    return dict(out)


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), in MiB per hour."""
    if len(samples) < 3:
        return float("nan")
    ts, ys = zip(*samples, strict=True)
    t_mean, y_mean = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - t_mean) ** 2 for t in ts)
    cov = sum((t - t_mean) * (y - y_mean) for t, y in zip(ts, ys, strict=True))
    return cov / var * 3600 if var else float("nan")


async def steady_load(url: str, until: float, concurrency: int, counts: dict[str, int]) -> None:
    endpoint = url + "/v1/chat/completions"
    good = {"authorization": f"Bearer {FORGE_KEY}", "content-type": "application/json"}
    messages = [{"role": "user", "content": "soak"}]

    def next_request() -> tuple[str, dict[str, str], bytes]:
        roll = random.random()
        if roll < 0.05:
            bad = {**good, "authorization": f"Bearer sk-forge-{uuid.uuid4().hex}"}
            return "unknown_key", bad, orjson.dumps({"model": "gpt-mock", "messages": messages})
        if roll < 0.06:
            huge = "m" * 10_000
            return "huge_model", good, orjson.dumps({"model": huge, "messages": messages})
        if roll < 0.08:
            name = f"no-such-model-{uuid.uuid4().hex}"
            return "unknown_model", good, orjson.dumps({"model": name, "messages": messages})
        stream = roll < 0.3
        body = {"model": "gpt-mock-inproc", "messages": messages, "stream": stream}
        return ("stream" if stream else "chat"), good, orjson.dumps(body)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            while time.monotonic() < until:
                kind, headers, body = next_request()
                try:
                    async with http.post(endpoint, data=body, headers=headers) as resp:
                        await resp.read()
                        counts[f"{kind} {resp.status}"] += 1
                except aiohttp.ClientError:
                    counts[f"{kind} error"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def sample(root: int, until: float, t0: float, out: dict[str, list]) -> None:
    while time.monotonic() < until:
        now = time.monotonic() - t0
        rss = rss_by_process(root)
        rss["(whole tree)"] = sum(rss.values())
        for name, mib in rss.items():
            out[name].append((now, mib))
        await asyncio.sleep(SAMPLE_EVERY_S)


async def soak(root: int, minutes: float, concurrency: int) -> None:
    t0 = time.monotonic()
    until = t0 + minutes * 60
    counts: dict[str, int] = defaultdict(int)
    samples: dict[str, list[tuple[float, float]]] = defaultdict(list)
    await asyncio.gather(
        steady_load(f"http://127.0.0.1:{FORGE_PORT}", until, concurrency, counts),
        sample(root, until, t0, samples),
    )
    wall = time.monotonic() - t0
    total = sum(counts.values())
    print(f"\nsoak: {minutes:g} min, concurrency {concurrency}, {total / wall:.0f} requests/s")
    print("responses:", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    warm = wall / 4
    print("\n| process | RSS MiB at start | at end | growth MiB/h (after warm-up) |")
    print("| --- | --- | --- | --- |")
    rows = []
    for name, series in samples.items():
        steady = [(t, m) for t, m in series if t >= warm]
        rows.append((name, series[0][1], series[-1][1], slope_per_hour(steady)))
    for name, first, last, slope in sorted(rows, key=lambda r: -r[2]):
        print(f"| {name} | {first:.0f} | {last:.0f} | {slope:+.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="forge-soak-"))
    mock = start_mock(0, 0, work)
    forge = None
    try:
        forge, took = start_forge(work)
        print(f"forge up ready in {took:.0f} s; soaking for {args.minutes:g} min …", flush=True)
        asyncio.run(soak(forge.pid, args.minutes, args.concurrency))
    finally:
        with contextlib.suppress(Exception):
            if forge is not None:
                stop(forge)
        stop(mock)


if __name__ == "__main__":
    main()
