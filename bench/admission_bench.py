"""Admission cost: a request decided from a replica's local lease against one that needs
a round trip to the control plane's limits facet, and how many grants one actor decides a
second.

    .venv/bin/python -m bench.admission_bench [--seconds 5]

Starts a local Ray (one CPU for the actor). Issue 12's goal: admission p50 <= 50 us with
a local lease. The figures are per call, medians, in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import ray

from actors.control_plane import ControlPlaneActor
from actors.facets import FacetHandle
from actors.remote import remote
from forge.limits.lease import LeasedAdmission
from forge.limits.limiter import RateLimiter


def us(seconds: float) -> float:
    return seconds * 1e6


async def local_lease(n: int) -> list[float]:
    """Admissions that the lease covers (a high limit: a lease of 100 tokens)."""
    limiter = RateLimiter()
    replica = LeasedAdmission(limiter.grant, limiter.give_back, replicas=1)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await replica.admit("key:bench:rpm", 6_000_000)
        times.append(time.perf_counter() - t0)
    return times


async def round_trips(client: RateLimiter, n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await client.grant(f"key:{i % 100}:rpm", 6_000_000, 1)
        times.append(time.perf_counter() - t0)
    return times


async def throughput(client: RateLimiter, seconds: float, outstanding: int = 64) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await client.grant(f"key:{w}:rpm", 6_000_000, 1)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(outstanding)))
    return done / (time.perf_counter() - t0)


async def main(seconds: float) -> None:
    local = await local_lease(200_000)
    actor = ControlPlaneActor.remote(("limits",))
    client = remote(FacetHandle(actor, "limits"), RateLimiter)
    await round_trips(client, 200)  # warm up
    trips = await round_trips(client, 2_000)
    rate = await throughput(client, seconds)
    lease_p50, trip_p50 = statistics.median(local), statistics.median(trips)
    print("| figure | value | goal |")
    print("| --- | --- | --- |")
    print(f"| admission p50, local lease | {us(lease_p50):.2f} us | <= 50 us |")
    print(f"| admission p99, local lease | {us(sorted(local)[int(len(local) * 0.99)]):.2f} us | |")
    print(f"| grant round trip p50, limits facet | {us(trip_p50):.0f} us | |")
    print(f"| round trip / local lease | {trip_p50 / lease_p50:.0f}x | |")
    print(f"| grants per second, one actor, 64 outstanding | {rate:,.0f} | |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput run")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        asyncio.run(main(args.seconds))
    finally:
        ray.shutdown()
