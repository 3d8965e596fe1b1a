"""Warm-up at replica start: pay the first-call costs before a client's request does.

A Serve handle sets up its path to a deployment lazily, on the first request through it:
the gRPC channel to each replica, the replica's queue length (an actor call), the
replica's own first-request work. The first request to a provider paid all of that and
counted it as platform overhead (``x-forge-overhead-ms``). So a replica sends one cheap
call along each such path as it starts (a provider deployment's ``warm``: nothing goes
upstream), in the background: a slow or failing warm-up never delays or fails the
start, it only leaves that cost to the first request, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

Warm = Callable[[], Awaitable[Any]]

# A provider deployment still starting (a model server loading) answers once it runs.
WARM_TIMEOUT_S = 60.0
# A key digest (SHA-256, hex) that no key has: a key lookup with it finds nothing.
NO_KEY_DIGEST = "0" * 64


def provider_warm_calls(clients: Mapping[str, object]) -> dict[str, Warm]:
    """``provider:<name>`` → its client's ``warm``, for the clients that have one (those
    behind a Serve handle; a provider running in the gateway has nothing to set up)."""
    calls: dict[str, Warm] = {}
    for name, client in clients.items():
        warm = getattr(client, "warm", None)
        if callable(warm):
            calls[f"provider:{name}"] = warm
    return calls


class WarmUp:
    """The warm-up calls of a replica. ``results``: name → whether its call succeeded,
    once it has finished (``/health/ready`` shows it as ``warm``)."""

    def __init__(self, calls: Mapping[str, Warm], timeout_s: float = WARM_TIMEOUT_S) -> None:
        self.calls = dict(calls)
        self.timeout_s = timeout_s
        self.results: dict[str, bool] = {}

    async def run(self) -> dict[str, bool]:
        """Every call at once; never raises (cancellation aside)."""
        await asyncio.gather(*(self._one(name, call) for name, call in self.calls.items()))
        return dict(self.results)

    async def _one(self, name: str, call: Warm) -> None:
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(call(), self.timeout_s)
        except Exception as exc:
            self.results[name] = False
            log.info(
                "warm-up of %s failed (%s): its first request sets the path up",
                name,
                type(exc).__name__,
            )
            return
        self.results[name] = True
        log.info("warmed %s in %.1f ms", name, (time.perf_counter() - t0) * 1000)
