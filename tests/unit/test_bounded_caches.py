"""Nothing a client sends can grow the gateway's caches without bound."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from forge.adapters import CachedAdapterLookup
from forge.errors import AuthenticationFailed
from forge.keys import KeyInfo, hash_key
from forge.ttl_cache import TtlCache
from gateway.auth import KeyVerifier


def test_ttl_cache_bounds_size_and_age(monkeypatch):
    cache: TtlCache[str, int | None] = TtlCache(3)
    for i in range(10):
        cache.put(f"k{i}", i, ttl_s=60)
    assert len(cache) == 3 and [k for k, _ in cache.items()] == ["k7", "k8", "k9"]
    cache.put("none", None, ttl_s=60)
    assert cache.lookup("none") == (True, None) and cache.lookup("k7") == (False, None)
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 61)
    assert cache.get("k9") is None and cache.lookup("none") == (False, None)
    with pytest.raises(ValueError):
        TtlCache(0)


async def test_a_flood_of_unknown_keys_leaves_a_bounded_cache():
    """12,000 distinct bad keys used to leave 12,004 entries, for good."""
    calls = 0
    good = KeyInfo(
        id="k1", name="ok", prefix="sk-forge-", role="user", created_at=datetime.now(UTC)
    )

    async def lookup(digest: str) -> KeyInfo | None:
        nonlocal calls
        calls += 1
        return good if digest == hash_key("sk-good") else None

    verifier = KeyVerifier(lookup, max_entries=500)
    for i in range(12_000):
        with pytest.raises(AuthenticationFailed):
            await verifier.verify(f"sk-bad-{i}")
    assert len(verifier._cache) == 500
    assert (await verifier.verify("sk-good")).id == "k1"
    calls_before = calls
    assert (await verifier.verify("sk-good")).id == "k1"  # still cached after the flood
    assert calls == calls_before


async def test_unknown_model_and_adapter_names_leave_a_bounded_cache():
    async def fetch(name: str) -> None:
        return None

    lookup = CachedAdapterLookup(fetch, max_entries=100)
    for i in range(5_000):
        assert await lookup(f"m{i}") is None
    assert len(lookup._cache) == 100
