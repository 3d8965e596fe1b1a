"""Gateway overhead: direct calls vs PromptForge vs LiteLLM's proxy, interleaved in one run.

    .venv/bin/python -m bench.gateway_bench            # full matrix (~15 min on 2 cores)
    .venv/bin/python -m bench.gateway_bench --quick    # smaller counts (~5 min)

Starts a mock upstream (0 ms, then 50 ms latency), `forge up` with two providers on it
(the ProviderProxy deployment, and the same provider placed inside the gateway replica;
the latter also with a key under rate limits at every level: governance on vs off),
and LiteLLM's proxy with 1 and 2 workers (installed into bench/.venv-litellm, never into
the project). Every target is measured in alternating rounds under the same load, and
the figures that matter are ratios between targets of the same run. Results go to
stdout and bench/results/<timestamp>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx2
import yaml

from bench.loadgen import median, process_tree, run_load, tree_cpu_seconds, tree_rss_mb

ROOT = Path(__file__).resolve().parent.parent
MOCK_PORT, FORGE_PORT, LITELLM_PORTS = 18001, 18000, {"litellm-1w": 14000, "litellm-2w": 14001}
FORGE_KEY, LITELLM_KEY = "sk-forge-bench", "sk-litellm-bench"


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM the process itself (it shuts its own children down), then its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_http(url: str, timeout: float, headers: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if httpx2.get(url, timeout=2, headers=headers).status_code == 200:
                return time.monotonic() - t0
        except httpx2.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def start_mock(latency_ms: float, inter_token_ms: float, work: Path) -> subprocess.Popen:
    proc = start(
        [
            sys.executable,
            "-m",
            "bench.mock_upstream",
            "--port",
            str(MOCK_PORT),
            "--latency-ms",
            str(latency_ms),
            "--inter-token-ms",
            str(inter_token_ms),
            "--tokens",
            "20",
        ],
        work / "mock.log",
    )
    wait_http(f"http://127.0.0.1:{MOCK_PORT}/v1/models", 20)
    return proc


def start_forge(
    work: Path, ready_path: str = "/health/ready", env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, float]:
    """`forge up` on the mock; returns once ``ready_path`` answers 200 (`/health/live` does
    not call the providers, so it leaves their paths as a client would first find them)."""
    base = f"http://127.0.0.1:{MOCK_PORT}/v1"
    config = {
        "server": {"port": FORGE_PORT},
        "providers": [
            {
                "name": "mock",
                "type": "openai_compatible",
                "base_url": base,
                "api_key_env": "MOCK_KEY",
                "placement": "deployment",
            },
            {
                "name": "mock-inproc",
                "type": "openai_compatible",
                "base_url": base,
                "api_key_env": "MOCK_KEY",
                "placement": "gateway",
            },
        ],
        "models": [
            {"name": "gpt-mock", "provider": "mock"},
            {"name": "gpt-mock-inproc", "provider": "mock-inproc", "model": "gpt-mock"},
        ],
    }
    (work / "forge.yaml").write_text(yaml.safe_dump(config))
    proc = start(
        [str(ROOT / ".venv/bin/forge"), "up", "--config", str(work / "forge.yaml")],
        work / "forge.log",
        {
            "FORGE_DATA_DIR": str(work / "data"),
            "FORGE_MASTER_KEY": FORGE_KEY,
            "MOCK_KEY": "mock",
            **(env or {}),
        },
    )
    took = wait_http(f"http://127.0.0.1:{FORGE_PORT}{ready_path}", 180)
    return proc, took


def litellm_venv(path: Path) -> Path:
    exe = path / "bin" / "litellm"
    if not exe.exists():
        print(f"installing litellm[proxy] into {path} (once) …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(path / "bin/pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


def start_litellm(exe: Path, work: Path, port: int, workers: int) -> tuple[subprocess.Popen, float]:
    config = {
        "model_list": [
            {
                "model_name": "gpt-mock",
                "litellm_params": {
                    "model": "openai/gpt-mock",
                    "api_base": f"http://127.0.0.1:{MOCK_PORT}/v1",
                    "api_key": "mock",
                },
            }
        ],
        "litellm_settings": {"set_verbose": False, "json_logs": True, "request_timeout": 600},
        "general_settings": {"master_key": LITELLM_KEY},
    }
    cfg = work / f"litellm-{port}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        cmd += ["--num_workers", str(workers)]
    proc = start(
        cmd,
        work / f"litellm-{port}.log",
        {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
    )
    took = wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180)
    return proc, took


TESTS = {  # name: (concurrency, requests full, requests quick, stream)
    "c1": (1, 300, 120, False),
    "c16": (16, 1500, 500, False),
    "c64": (64, 2000, 800, False),
    # 160 streams at c=16 took 0.7 s: too short a window for CPU per stream, which then
    # moved 4.9-7.8 ms between runs of the same code with Ray's periodic work in it or not
    "stream_c16": (16, 1600, 800, True),
}


def governed_key() -> str:
    """A user key under limits at every level (its own, its project's and its
    organisation's, requests and tokens a minute, high enough never to refuse the bench:
    each of its requests passes six buckets) and a daily dollar budget on its project;
    its admin actions are audited (governance on)."""
    url, auth = f"http://127.0.0.1:{FORGE_PORT}", {"authorization": f"Bearer {FORGE_KEY}"}
    made = httpx2.post(f"{url}/admin/keys", headers=auth, json={"name": "governed"}, timeout=30)
    made.raise_for_status()
    key = made.json()
    high = {"max_requests_per_1_minute": 1_000_000, "max_tokens_per_1_minute": 1_000_000_000}
    for scope, subject, model in (
        ("key", key["info"]["id"], "*"),
        ("project", key["info"]["project_id"], "gpt-mock-inproc"),
        ("organization", key["info"]["org_id"], "gpt-mock-inproc"),
    ):
        rule = {"scope": scope, "subject_id": subject, "model": model, **high}
        httpx2.put(f"{url}/admin/rate_limits", headers=auth, json=rule, timeout=30)
    budget = {"scope": "project", "subject_id": key["info"]["project_id"], "limit": 1e6}
    httpx2.post(f"{url}/admin/budgets", headers=auth, json=budget, timeout=30).raise_for_status()
    return str(key["key"])


async def measure(
    targets: dict[str, dict[str, Any]], rounds: int, quick: bool, scenario: str, results: dict
) -> None:
    names = list(targets)
    for test, (c, n_full, n_quick, stream) in TESTS.items():
        n = n_quick if quick else n_full
        for r in range(rounds):
            order = names if r % 2 == 0 else list(reversed(names))
            for name in order:
                t = targets[name]
                roots = {o["pid"] for o in targets.values() if o.get("pid")} - {t.get("pid")}
                others = [pid for root in roots for pid in process_tree(root)]
                others_cpu0, wall0 = tree_cpu_seconds(others), time.perf_counter()
                res = await run_load(
                    name,
                    t["url"],
                    t["key"],
                    t["model"],
                    n=n,
                    c=c,
                    stream=stream,
                    watch_pid=t.get("pid"),
                )
                summary = res.summary()
                # The other gateways idle meanwhile, on the same cores: what they spend
                # (background work left by earlier load) shows up as noise in this one.
                busy = (tree_cpu_seconds(others) - others_cpu0) / (time.perf_counter() - wall0)
                summary["others_cpu_pct"] = round(100 * busy, 1)
                results[scenario][test][name].append(summary)
                print(f"  {scenario:>5} {test:<10} round {r} {name:<14} {summary}", flush=True)


def reduce(runs: list[dict]) -> dict[str, float]:
    keys = {k for run in runs for k, v in run.items() if isinstance(v, int | float)}
    return {k: median([run[k] for run in runs if k in run]) for k in keys}


def figure(tests: dict, test: str, name: str, key: str) -> float:
    runs = tests[test].get(name)
    return reduce(runs).get(key, float("nan")) if runs else float("nan")


GOALS = {"latency": "≤ 0.25", "rps": "≥ 1.5 (2 stretch)", "cpu": "≤ 0.33"}


def ratio_rows(scenario: str, tests: dict) -> list[str]:
    """The issue's goals, as ratios against LiteLLM's best configuration in this run."""
    lite = [n for n in ("litellm-1w", "litellm-2w") if n in tests["c1"]]
    if not lite:
        return []
    direct = figure(tests, "c1", "direct", "p50_ms")
    added_lite = min(figure(tests, "c1", n, "p50_ms") for n in lite) - direct
    rps_lite = max(figure(tests, "c64", n, "rps") for n in lite)
    cpu_lite = min(figure(tests, "c64", n, "cpu_ms_per_req") for n in lite)
    rows = []
    for forge in ("forge", "forge-inproc"):
        added = figure(tests, "c1", forge, "p50_ms") - direct
        rps = figure(tests, "c64", forge, "rps")
        cpu = figure(tests, "c64", forge, "cpu_ms_per_req")
        rows += [
            f"| {scenario} {forge}: added p50 at c=1 / LiteLLM's | {added / added_lite:.2f} "
            f"| {GOALS['latency']} |",
            f"| {scenario} {forge}: req/s at c=64 / LiteLLM's best | {rps / rps_lite:.2f} "
            f"| {GOALS['rps']} |",
            f"| {scenario} {forge}: CPU per request at c=64 / LiteLLM's | {cpu / cpu_lite:.2f} "
            f"| {GOALS['cpu']} |",
        ]
    return rows


def governance_rows(scenario: str, tests: dict) -> list[str]:
    """Governance on (a key under limits at every level) against off (the operator's key,
    under none), same placement, same run."""
    if "forge-governed" not in tests["c1"]:
        return []
    on, off = "forge-governed", "forge-inproc"
    added = figure(tests, "c1", on, "p50_ms") - figure(tests, "c1", off, "p50_ms")
    rps = figure(tests, "c64", on, "rps") / figure(tests, "c64", off, "rps")
    cpu = figure(tests, "c64", on, "cpu_ms_per_req") / figure(tests, "c64", off, "cpu_ms_per_req")
    return [
        f"| {scenario} governance on - off: added p50 at c=1 | {added:+.2f} ms | ≤ +0.3 ms |",
        f"| {scenario} governance on / off: req/s at c=64 | {rps:.2f} | ≥ 0.9 |",
        f"| {scenario} governance on / off: CPU per request at c=64 | {cpu:.2f} | |",
    ]


def report(results: dict, rss: dict[str, float], startup: dict[str, float]) -> str:
    lines = []
    for scenario, tests in results.items():
        lines += [
            f"\n### upstream latency {scenario}\n",
            "| test | target | p50 ms | p99 ms | added p50 ms | req/s | TTFT p50 ms | CPU ms/req "
            "| others' CPU % |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for test, targets in tests.items():
            direct = reduce(targets["direct"])
            for name, runs in targets.items():
                m = reduce(runs)
                added = m["p50_ms"] - direct["p50_ms"]
                lines.append(
                    f"| {test} | {name} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                    f"{added:.2f} | {m['rps']:.0f} | {m.get('ttft_p50_ms', float('nan')):.1f} | "
                    f"{m.get('cpu_ms_per_req', float('nan')):.2f} | "
                    f"{m.get('others_cpu_pct', float('nan')):.0f} |"
                )
    lines += ["\n### ratios (same run)\n", "| figure | value | goal |", "| --- | --- | --- |"]
    for scenario, tests in results.items():
        lines += ratio_rows(scenario, tests) + governance_rows(scenario, tests)
    lines += [
        "\n### memory and start-up\n",
        "| process tree | RSS MiB | start-up s |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {k} | {v:.0f} | {startup.get(k, float('nan')):.1f} |" for k, v in rss.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer requests per run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument(
        "--litellm-venv",
        type=Path,
        default=Path(os.environ.get("LITELLM_VENV", ROOT / "bench/.venv-litellm")),
    )
    ap.add_argument("--scenarios", default="0:0,50:5", help="latency_ms:inter_token_ms,…")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    procs: list[subprocess.Popen] = []
    results: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    rss: dict[str, float] = {}
    startup: dict[str, float] = {}
    try:
        mock = start_mock(0, 0, work)
        forge, startup["forge"] = start_forge(work)
        procs.append(forge)
        targets: dict[str, dict[str, Any]] = {
            "direct": {"url": f"http://127.0.0.1:{MOCK_PORT}", "key": "mock", "model": "gpt-mock"},
            "forge": {
                "url": f"http://127.0.0.1:{FORGE_PORT}",
                "key": FORGE_KEY,
                "model": "gpt-mock",
                "pid": forge.pid,
            },
            "forge-inproc": {
                "url": f"http://127.0.0.1:{FORGE_PORT}",
                "key": FORGE_KEY,  # the operator's: under no limits
                "model": "gpt-mock-inproc",
                "pid": forge.pid,
            },
            "forge-governed": {
                "url": f"http://127.0.0.1:{FORGE_PORT}",
                "key": governed_key(),
                "model": "gpt-mock-inproc",
                "pid": forge.pid,
            },
        }
        if not args.skip_litellm:
            exe = litellm_venv(args.litellm_venv)
            for name, port in LITELLM_PORTS.items():
                proc, startup[name] = start_litellm(
                    exe, work, port, 1 if name.endswith("1w") else 2
                )
                procs.append(proc)
                targets[name] = {
                    "url": f"http://127.0.0.1:{port}",
                    "key": LITELLM_KEY,
                    "model": "gpt-mock",
                    "pid": proc.pid,
                }
        for scenario in args.scenarios.split(","):
            latency, inter = (float(x) for x in scenario.split(":"))
            stop(mock, 10)
            mock = start_mock(latency, inter, work)
            asyncio.run(measure(targets, args.rounds, args.quick, f"{latency:g}ms", results))
        for name, t in targets.items():
            if "pid" in t and name not in ("forge-inproc", "forge-governed"):
                rss[name] = tree_rss_mb(process_tree(t["pid"]))
        stop(mock, 10)
    finally:
        for proc in procs:
            stop(proc)
    text = report(results, rss, startup)
    print(text)
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"gateway-{stamp}.json").write_text(
        json.dumps(
            {"results": results, "rss_mb": rss, "startup_s": startup, "args": vars(args)},
            indent=1,
            default=str,
        )
    )
    (out / f"gateway-{stamp}.md").write_text(text + "\n")
    print(f"\nwritten: bench/results/gateway-{stamp}.md (work dir {work})")


if __name__ == "__main__":
    main()
