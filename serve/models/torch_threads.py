"""Which threads an engine's torch work runs on: few, and the same ones.

Measured on this 2-core CPU (docs/architecture.md): one elementwise torch op, run once on
another long-lived thread (an asyncio default-executor worker), halved the speed of the
batch loop's thread for good. Each thread that enters a parallel region gets an OpenMP
thread team of its own (libgomp), the team lives as long as its thread, and the teams
contend for the cores. A thread that ends takes its team with it. Hence one-off torch
work (loading a model, reading an adapter) runs in a thread of its own that then ends,
and recurring work on one thread each: the batch loop for generation, one executor
thread for embeddings. (Also here: how much memory this process may still take.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


async def run_in_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a new thread that ends when it returns (with its OpenMP team)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting task
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name=f"torch-{fn.__name__}", daemon=True).start()
    return await future


def available_memory() -> int:
    """Bytes this process can still take: the kernel's MemAvailable (free memory plus
    reclaimable page cache), or less under a cgroup (container) memory limit."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # MemFree
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as meminfo:
            line = next(line for line in meminfo if line.startswith("MemAvailable:"))
        available = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available, int(limit) - used)
    return max(available, 0)
