"""Stopping without cutting anyone off: a gateway replica's drain.

`serve.shutdown()` stops HAProxy at once, and HAProxy is the client's TCP peer: a stream
in flight was cut ~0.2 s after SIGTERM to `forge up`. So `forge up` drains before it
shuts Serve down. It asks the directory (a control-plane facet) to begin a drain; every
gateway replica watches for that (``DrainWatcher``, once a second) and then:

1. answers new requests with a 503 (``shutting_down``, Retry-After) in the platform's
   error shape,
2. lets requests in flight finish, up to the drain timeout,
3. at the timeout ends the streams still open with an error event and ``[DONE]``
   (their records say ``error`` / ``server_shutting_down``),
4. reports its requests in flight and its unshipped usage, which `forge up` waits to see
   at zero on every replica before it stops Serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

SHUTTING_DOWN = "server_shutting_down"
POLL_S = 1.0  # how often a replica asks whether a drain began
DRAINING_POLL_S = 0.25  # and how often it reports while draining


class Drain:
    """One replica's drain state; the middleware and the stream responses consult it."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False
        self._expired: asyncio.Event | None = None

    def expired_event(self) -> asyncio.Event:
        """Set when the drain timeout has passed (streams still open end then)."""
        if self._expired is None:
            self._expired = asyncio.Event()
        return self._expired

    @property
    def expired(self) -> bool:
        return self._expired is not None and self._expired.is_set()

    def begin(self, timeout_s: float) -> None:
        """Stop admitting; end what is still streaming after ``timeout_s``."""
        if self.draining:
            return
        self.draining = True
        expired = self.expired_event()
        log.warning("draining: %d requests in flight, %.0f s to finish", self.in_flight, timeout_s)
        asyncio.get_running_loop().call_later(max(timeout_s, 0.0), expired.set)


Fetch = Callable[[], Awaitable[float | None]]
Report = Callable[[dict[str, Any]], Any]


class DrainWatcher:
    """Polls the cluster-wide drain deadline (wall-clock seconds, from the directory
    actor) and reports this replica's progress while draining."""

    def __init__(self, drain: Drain, fetch_deadline: Fetch, report: Report) -> None:
        self._drain = drain
        self._fetch = fetch_deadline
        self._report = report
        self.progress: Callable[[], dict[str, Any]] = lambda: {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(DRAINING_POLL_S if self._drain.draining else POLL_S)
            if self._drain.draining:
                with contextlib.suppress(Exception):
                    self._report(
                        {"draining": True, "in_flight": self._drain.in_flight, **self.progress()}
                    )
                continue
            try:
                deadline = await self._fetch()
            except Exception:  # the directory restarting: ask again next time
                continue
            if deadline is not None:
                self._drain.begin(deadline - time.time())
