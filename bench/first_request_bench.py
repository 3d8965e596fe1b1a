"""The first request after a gateway replica starts: does it pay for setting things up?

    .venv/bin/python -m bench.first_request_bench

Starts the mock upstream and `forge up` (as `bench.gateway_bench` does), waits only for
`/health/live` (readiness would call every provider and so warm their paths), gives the
replica a few seconds, then sends requests one at a time to a model behind a provider
deployment (`gpt-mock`) and one inside the gateway (`gpt-mock-inproc`). The figure is the
gateway's own overhead (`x-forge-overhead-ms`) of each model's first request against the
median of its next 20: the ratio is 1 when nothing is left to set up on a first request.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import httpx2

from bench.gateway_bench import FORGE_KEY, FORGE_PORT, start_forge, start_mock, stop

SETTLE_S = 5.0
FOLLOWING = 20


def overheads(http: httpx2.Client, model: str, count: int) -> list[float]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    figures = []
    for _ in range(count):
        r = http.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        figures.append(float(r.headers["x-forge-overhead-ms"]))
    return figures


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mock = start_mock(latency_ms=0, inter_token_ms=0, work=work)
        forge = None
        try:
            forge, took = start_forge(work, ready_path="/health/live")
            print(f"forge up live in {took:.0f} s; waiting {SETTLE_S:.0f} s", flush=True)
            time.sleep(SETTLE_S)
            headers = {"authorization": f"Bearer {FORGE_KEY}"}
            base = f"http://127.0.0.1:{FORGE_PORT}"
            rows = []
            with httpx2.Client(base_url=base, headers=headers, timeout=60) as http:
                for model in ("gpt-mock", "gpt-mock-inproc"):
                    first, *rest = overheads(http, model, 1 + FOLLOWING)
                    steady = statistics.median(rest)
                    rows.append((model, first, steady))
        finally:
            if forge is not None:
                stop(forge)
            stop(mock)
    print("\n| model | first request overhead ms | median of next 20 | ratio |")
    print("| --- | --- | --- | --- |")
    for model, first, steady in rows:
        print(f"| {model} | {first:.2f} | {steady:.2f} | {first / steady:.1f} |")


if __name__ == "__main__":
    main()
