"""Authenticating API keys on the hot path with a replica-local TTL cache.

A verified key is trusted for ``ttl_s``; unknown keys are remembered for a shorter time
so that a flood of bad keys cannot hammer the directory. Concurrent misses for one key
share a single lookup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import Request

from forge.errors import AuthenticationFailed, PermissionDenied, ServiceUnavailable
from forge.keys import KeyInfo, hash_key
from forge.ttl_cache import TtlCache

Lookup = Callable[[str], Awaitable[KeyInfo | None]]
NEGATIVE_TTL_S = 1.0
MAX_CACHED_KEYS = 10_000  # known and unknown keys together; bounded against key floods


def presented_key(request: Request) -> str | None:
    """The key from ``Authorization: Bearer`` or Anthropic-style ``x-api-key``."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key") or None


class KeyVerifier:
    def __init__(
        self, lookup: Lookup, ttl_s: float = 5.0, max_entries: int = MAX_CACHED_KEYS
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl_s
        self._cache: TtlCache[str, KeyInfo | None] = TtlCache(max_entries)
        self._inflight: dict[str, asyncio.Future[KeyInfo | None]] = {}

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached answers (all, or those for one key id) after a revocation."""
        if key_id is None:
            self._cache.clear()
            return
        for h, info in self._cache.items():
            if info is not None and info.id == key_id:
                self._cache.pop(h)

    async def verify(self, key: str | None) -> KeyInfo:
        if not key:
            raise AuthenticationFailed(
                "Missing API key: send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        digest = hash_key(key)
        found, info = self._cache.lookup(digest)
        if not found:
            info = await self._fetch(digest)
            self._cache.put(digest, info, self._ttl if info is not None else NEGATIVE_TTL_S)
        if info is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        if info.revoked_at is not None:
            raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
        return info

    async def _fetch(self, digest: str) -> KeyInfo | None:
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyInfo | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            info = await self._lookup(digest)
        except Exception as exc:
            future.set_exception(
                ServiceUnavailable(
                    "The key directory is unavailable; retry shortly.", retry_after=1
                )
            )
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise ServiceUnavailable(
                "The key directory is unavailable; retry shortly.", retry_after=1
            ) from exc
        else:
            future.set_result(info)
            return info
        finally:
            del self._inflight[digest]


def require_admin(info: KeyInfo) -> KeyInfo:
    if info.role != "admin":
        raise PermissionDenied("This route needs an admin key.")
    return info
