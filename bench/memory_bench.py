"""Resident memory of `forge up`, process by process (issue 13: goal ≤ 1 GiB for the tree
with one provider, against ~0.4 GiB for LiteLLM's proxy with one worker).

    .venv/bin/python -m bench.memory_bench [--config forge.yaml]

Starts the mock upstream and `forge up` with one provider (placed in the gateway
replica), sends a few requests so that every lazy import has happened, then prints each
process of the tree with its RSS, PSS (shared pages split between the processes that
share them: the tree's PSS is what it holds) and USS (what stopping it alone would
free), and the totals. RSS counts shared pages once per process: the tree's RSS, the
figure the issue compares with LiteLLM's, overstates what a tree of many processes
holds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx2
import psutil
import yaml

from bench.gateway_bench import FORGE_KEY, FORGE_PORT, MOCK_PORT, start, start_mock, stop, wait_http

ONE_PROVIDER = {
    "server": {"port": FORGE_PORT},
    "providers": [
        {
            "name": "mock",
            "type": "openai_compatible",
            "base_url": f"http://127.0.0.1:{MOCK_PORT}/v1",
            "api_key_env": "MOCK_KEY",
            "placement": "gateway",
        }
    ],
    "models": [{"name": "gpt-mock", "provider": "mock"}],
}


def label(proc: psutil.Process) -> str:
    """A short name: Ray's workers name themselves in their title (ray::Actor)."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "?"
    title = " ".join(cmd)
    if title.startswith("ray::"):
        return title.split()[0]
    for part in cmd:
        name = Path(part).name
        if name not in ("python", "python3", "python3.11") and not name.startswith("-"):
            return name if len(cmd) < 3 else f"{name} {Path(cmd[-1]).name}"[:60]
    return proc.name()


SETTLE_S = 5.0  # for the processes of the start to be gone (the deploy task's worker)


def wait_serving(log: Path, timeout_s: float) -> None:
    """Until `forge up` says it is serving: its start is over (the deploy task's worker
    has exited), not only the gateway answering."""
    deadline = time.monotonic() + timeout_s
    while "PromptForge is serving at" not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"forge up did not finish starting; see {log}")
        time.sleep(0.5)


def breakdown(root: int) -> list[tuple[str, int, float, float, float]]:
    rows = []
    top = psutil.Process(root)
    for proc in [top, *top.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rows.append((label(proc), proc.pid, info.rss / 2**20, info.pss / 2**20, info.uss / 2**20))
    return sorted(rows, key=lambda r: -r[2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, help="a forge.yaml (default: one provider)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="forge-mem-"))
    config = work / "forge.yaml"
    config.write_text(args.config.read_text() if args.config else yaml.safe_dump(ONE_PROVIDER))
    mock = start_mock(0, 0, work)
    forge = start(
        [
            str(Path(__file__).resolve().parent.parent / ".venv/bin/forge"),
            "up",
            "--config",
            str(config),
        ],
        work / "forge.log",
        {"FORGE_DATA_DIR": str(work / "data"), "FORGE_MASTER_KEY": FORGE_KEY, "MOCK_KEY": "mock"},
    )
    try:
        wait_http(f"http://127.0.0.1:{FORGE_PORT}/health/ready", 180)
        wait_serving(work / "forge.log", 180)
        body = {"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {FORGE_KEY}"}
        for stream in (False, True, False):
            httpx2.post(
                f"http://127.0.0.1:{FORGE_PORT}/v1/chat/completions",
                json={**body, "stream": stream},
                headers=headers,
                timeout=30,
            ).raise_for_status()
        time.sleep(SETTLE_S)
        rows = breakdown(forge.pid)
        print("| process | RSS MiB | PSS MiB | USS MiB |\n| --- | --- | --- | --- |")
        for name, _pid, rss, pss, uss in rows:
            print(f"| {name} | {rss:.0f} | {pss:.0f} | {uss:.0f} |")
        totals = " | ".join(f"**{sum(r[i] for r in rows):.0f}**" for i in (2, 3, 4))
        print(f"| **tree ({len(rows)} processes)** | {totals} |")
    finally:
        stop(forge)
        stop(mock, 10)


if __name__ == "__main__":
    main()
