"""What the Responses route adds over Chat Completions for the same request.

    .venv/bin/python -m bench.responses_bench [--requests 400] [--database-url URL]

Starts the mock upstream (0 ms) and `forge up` (as `bench.gateway_bench` does), then sends
one request at a time, alternating `POST /v1/chat/completions` and the same request as
`POST /v1/responses` (`store: false`, so both do the same work but the translation), to a
model in the gateway (`gpt-mock-inproc`). The figure is the difference of the p50
latencies (issue 11's goal: ≤ 0.3 ms), next to the same difference with `store: true`
(one database write per request) and each route's p50 itself. ``--database-url``: the
platform's database (default: SQLite in a temporary data dir), e.g.
``postgresql+asyncpg://postgres@127.0.0.1:5432/test`` (its tables are migrated first).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx2

from bench.gateway_bench import FORGE_KEY, FORGE_PORT, start_forge, start_mock, stop

MODEL = "gpt-mock-inproc"
PROMPT = "bench me please"
ROUTES = {
    "chat": (
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]},
    ),
    "responses": ("/v1/responses", {"model": MODEL, "input": PROMPT, "store": False}),
    "responses+store": ("/v1/responses", {"model": MODEL, "input": PROMPT}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400, help="per route")
    parser.add_argument("--database-url", default=None, help="default: SQLite, temporary")
    args = parser.parse_args()
    env = {"FORGE_DATABASE_URL": args.database_url} if args.database_url else {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mock = start_mock(latency_ms=0, inter_token_ms=0, work=work)
        forge = None
        try:
            forge, _ = start_forge(work, env=env)
            headers = {"authorization": f"Bearer {FORGE_KEY}"}
            times: dict[str, list[float]] = {name: [] for name in ROUTES}
            with httpx2.Client(
                base_url=f"http://127.0.0.1:{FORGE_PORT}", headers=headers, timeout=60
            ) as http:
                for i in range(args.requests + 50):  # the first 50 rounds warm up
                    for name, (path, body) in ROUTES.items():
                        t0 = time.perf_counter()
                        http.post(path, json=body).raise_for_status()
                        if i >= 50:
                            times[name].append((time.perf_counter() - t0) * 1000)
        finally:
            if forge is not None:
                stop(forge)
            stop(mock)
    p50 = {name: statistics.median(values) for name, values in times.items()}
    where = args.database_url.split("://")[0] if args.database_url else "sqlite (default)"
    print(f"\n{args.requests} requests per route, interleaved, c=1, 0 ms upstream, {where}\n")
    print("| route | p50 ms | p50 over chat ms |")
    print("| --- | --- | --- |")
    for name, value in p50.items():
        print(f"| {name} | {value:.2f} | {value - p50['chat']:+.2f} |")


if __name__ == "__main__":
    main()
