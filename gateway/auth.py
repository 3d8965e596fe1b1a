"""Authenticating API keys on the hot path with a replica-local TTL cache.

A verified key is trusted for ``ttl_s``; unknown keys are remembered for a shorter time
so that a flood of bad keys cannot hammer the directory. Concurrent misses for one key
share a single lookup. A lookup that fails (the directory restarting: Ray brings the
control plane back within a second or two, and the key-change feed's reset has just
emptied the cache) is asked again with backoff for up to ``unavailable_wait_s`` before
the request gets its 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi import Request

from forge.errors import AuthenticationFailed, PermissionDenied, ServiceUnavailable
from forge.keys import KeyInfo, hash_key
from forge.ttl_cache import TtlCache

Lookup = Callable[[str], Awaitable[KeyInfo | None]]
NEGATIVE_TTL_S = 1.0
MAX_CACHED_KEYS = 10_000  # known and unknown keys together; bounded against key floods
UNAVAILABLE_WAIT_S = 5.0
FIRST_RETRY_S, MAX_RETRY_S = 0.05, 0.5


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
        self,
        lookup: Lookup,
        ttl_s: float = 5.0,
        max_entries: int = MAX_CACHED_KEYS,
        unavailable_wait_s: float = UNAVAILABLE_WAIT_S,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl_s
        self._unavailable_wait_s = unavailable_wait_s
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
        return await self.verify_digest(hash_key(key))

    async def verify_digest(self, digest: str) -> KeyInfo:
        """``verify`` for a key known by its digest (a batch runs as the key that made
        it, whose digest is all the platform keeps)."""
        found, info = self._cache.lookup(digest)
        if not found:
            info = await self._fetch(digest)
            self._cache.put(digest, info, self._ttl if info is not None else NEGATIVE_TTL_S)
        if info is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        check_usable(info)
        return info

    async def _fetch(self, digest: str) -> KeyInfo | None:
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyInfo | None] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            info = await self._lookup_waiting(digest)
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

    async def _lookup_waiting(self, digest: str) -> KeyInfo | None:
        """The directory's answer, asked again with backoff while it fails, for up to
        ``unavailable_wait_s``; then its last error."""
        give_up = time.monotonic() + self._unavailable_wait_s
        delay = FIRST_RETRY_S
        while True:
            try:
                return await self._lookup(digest)
            except Exception:
                if time.monotonic() + delay > give_up:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)


def check_usable(info: KeyInfo) -> None:
    """401 for a key revoked, expired or whose organisation is gone; 403 for one whose
    organisation is suspended or whose project is archived."""
    if info.revoked_at is not None:
        raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
    if info.expires_at is not None and info.expires_at <= datetime.now(UTC):
        raise AuthenticationFailed(
            f"This API key expired at {info.expires_at.isoformat(timespec='seconds')}.",
            code="expired_api_key",
        )
    if info.org_status == "deleted":
        raise AuthenticationFailed(
            "This API key's organization has been deleted.", code="invalid_api_key"
        )
    if info.org_status == "suspended":
        raise PermissionDenied(
            f"The organization {info.org_id!r} is suspended; its keys are refused until the "
            "platform operator reactivates it.",
            code="organization_suspended",
        )
    if info.project_status == "archived":
        raise PermissionDenied(
            f"The project {info.project_id!r} is archived; its keys no longer work.",
            code="project_archived",
        )


def require_admin(info: KeyInfo) -> KeyInfo:
    """An organisation's admin key (or the platform operator's)."""
    if info.role not in ("admin", "platform"):
        raise PermissionDenied("This route needs an admin key.")
    return info


def require_platform(info: KeyInfo) -> KeyInfo:
    """The platform operator's key: the routes above organisations."""
    if info.role != "platform":
        raise PermissionDenied("This route needs the platform operator's key.")
    return info
