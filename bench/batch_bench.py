"""A batch of chat requests against the same requests sent live, on `forge up`.

    python -m bench.batch_bench            # 10,000 requests, ~3 min here
    python -m bench.batch_bench --n 2000   # quicker

The platform runs on its embedded defaults (SQLite) in front of the mock upstream
(bench/mock_upstream.py, no latency), with one in-process provider. Live: the requests
sent over HTTP by a load generator at several concurrencies, the best one's throughput
kept. Batch: the same requests as one JSONL file, uploaded, `POST /v1/batches`, polled
until `completed`; its throughput is lines over the time from create to completed,
including writing the output file. The goal: ≥ 0.8 of live.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import openai

from bench.gateway_bench import FORGE_KEY, FORGE_PORT, start_forge, start_mock, stop
from bench.loadgen import run_load

MODEL = "gpt-mock-inproc"


def batch_file(n: int) -> bytes:
    rows = (
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "bench me please"}]},
        }
        for i in range(n)
    )
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


async def live_best(url: str, n: int, concurrencies: list[int]) -> tuple[float, int]:
    best = (0.0, 0)
    for c in concurrencies:
        result = await run_load("live", url, FORGE_KEY, MODEL, n=n, c=c)
        print(f"  live c={c}: {result.rps:,.0f} req/s, {result.errors} errors", flush=True)
        best = max(best, (result.rps, c))
    return best


def run_batch(url: str, n: int) -> tuple[float, dict[str, int]]:
    client = openai.OpenAI(base_url=url + "/v1", api_key=FORGE_KEY, max_retries=2)
    data = client.files.create(file=("bench.jsonl", batch_file(n)), purpose="batch")
    t0 = time.perf_counter()
    batch = client.batches.create(
        input_file_id=data.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    took = time.perf_counter() - t0
    counts = batch.request_counts.model_dump() if batch.request_counts else {}
    if batch.status != "completed" or counts.get("completed") != n:
        raise SystemExit(f"the batch ended {batch.status} with {counts}")
    lines = client.files.content(batch.output_file_id).text.count("\n")
    assert lines == n, f"{lines} output lines for {n} requests"
    return n / took, counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--concurrency", default="16,64,128", help="live concurrencies to try")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    mock = start_mock(0, 0, work)
    forge, _ = start_forge(work)
    url = f"http://127.0.0.1:{FORGE_PORT}"
    try:
        batch_rps, counts = run_batch(url, args.n)
        print(f"  batch: {batch_rps:,.0f} lines/s ({counts})", flush=True)
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        live_rps, best_c = asyncio.run(live_best(url, min(args.n, 5000), concurrencies))
    finally:
        stop(forge)
        stop(mock)
    print(f"batch_bench: {args.n:,} chat requests, mock upstream (0 ms), forge up (SQLite)")
    print("| path | requests/s |")
    print("| --- | --- |")
    print(f"| live, best concurrency (c={best_c}) | {live_rps:,.0f} |")
    print(f"| batch (create to completed, output written) | {batch_rps:,.0f} |")
    print(f"ratio batch / live: {batch_rps / live_rps:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
