"""The control plane's directory facet: keys, adapters, and the model replicas' latest
stats.

Keys and adapters live in the database (``forge.directory.Directory``); gateway replicas
ask on a cache miss and keep the answer for a short TTL. Replica stats are soft state:
each model replica reports every few seconds and `forge status` reads the latest.
"""

from __future__ import annotations

import time
from typing import Any

from forge.db.engine import make_engine, make_sessionmaker
from forge.directory import Directory
from forge.settings import Settings

STATS_TTL_S = 15.0  # a replica silent this long is gone (stopped, replaced)


class PlatformDirectory(Directory):
    """``Directory`` on the platform's database, plus the soft state the control plane
    keeps beside it: replica stats and the drain deadline. The database is the state, so
    a restart loses nothing that matters; calls that hit a restart fail (no blind retry of
    a key creation) and callers retry."""

    def __init__(self) -> None:
        self._engine = make_engine(Settings().resolved_database_url())
        super().__init__(make_sessionmaker(self._engine))
        self._replicas: dict[str, tuple[float, dict[str, Any]]] = {}
        self._drain_deadline: float | None = None

    def report_replica(self, replica_id: str, stats: dict[str, Any]) -> None:
        self._replicas[replica_id] = (time.monotonic(), stats)

    def replica_stats(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        self._replicas = {
            r: (t, s) for r, (t, s) in self._replicas.items() if now - t < STATS_TTL_S
        }
        return {r: s for r, (_, s) in self._replicas.items()}

    def begin_drain(self, timeout_s: float) -> float:
        """`forge up` stopping: every gateway replica drains (gateway/drain.py) and must
        be done by the returned wall-clock deadline."""
        if self._drain_deadline is None:
            self._drain_deadline = time.time() + timeout_s
        return self._drain_deadline

    def drain_deadline(self) -> float | None:
        return self._drain_deadline
