"""A dictionary bounded by size and age, for the caches on the hot path.

Anything a client can make the gateway remember (an unknown key, a model or adapter
name) must be bounded: 12,000 distinct bad keys left 12,004 entries in an unbounded
cache. Entries expire after their own TTL; past ``max_entries`` the oldest insertion goes
(FIFO: cheaper than LRU per hit, and under a flood of distinct keys just as bounded).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The live value for ``key``, or None (missing or expired)."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self._entries[key]
            return None
        return hit[1]

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(found, value): for caches that remember a ``None`` answer too."""
        hit = self._entries.get(key)
        if hit is None:
            return False, None
        if hit[0] <= time.monotonic():
            del self._entries[key]
            return False, None
        return True, hit[1]

    def put(self, key: K, value: V, ttl_s: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic() + ttl_s, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def items(self) -> list[tuple[K, V]]:
        """Live entries (a snapshot)."""
        now = time.monotonic()
        return [(k, v) for k, (t, v) in self._entries.items() if t > now]

    def __len__(self) -> int:
        return len(self._entries)
