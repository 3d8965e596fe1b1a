"""Brute force: failed logins counted per email (whether or not an account has it, so a
lock says nothing about existence) and per source address, in the database (every
gateway replica sees them). A few failures slow each answer down; more within the window
lock logins for that key until the lock runs out or an admin unlocks."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.config import LoginLimits
from forge.db.schema import LoginThrottle, as_utc, utcnow


def email_key(email: str) -> str:
    return "email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()


def address_key(address: str | None) -> str | None:
    return None if not address else f"ip:{address[:60]}"


class LoginThrottleStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], limits: LoginLimits) -> None:
        self._sessions = sessions
        self.limits = limits

    async def locked_for(self, keys: list[str]) -> float:
        """Seconds until every lock on ``keys`` has run out (0: none)."""
        now = utcnow()
        async with self._sessions() as s:
            longest = 0.0
            for key in keys:
                row = await s.get(LoginThrottle, key)
                if row is not None and row.locked_until is not None:
                    longest = max(longest, (as_utc(row.locked_until) - now).total_seconds())
        return longest

    async def failed(self, keys: list[str]) -> int:
        """Count a failure against each key (a window that ran out starts again); an
        address locks later than an email (many people may share one). Returns the
        first key's (the email's) failures."""
        now, limits, first = utcnow(), self.limits, 0
        window = timedelta(seconds=limits.window_s)
        async with self._sessions.begin() as s:
            for key in keys:
                row = await s.get(LoginThrottle, key, with_for_update=True)
                if row is None:
                    row = LoginThrottle(key=key, failures=0, first_at=now)
                    s.add(row)
                elif now - as_utc(row.first_at) > window:
                    row.failures, row.first_at, row.locked_until = 0, now, None
                row.failures += 1
                lock_after = (
                    limits.address_lock_after if key.startswith("ip:") else limits.lock_after
                )
                if row.failures >= lock_after:
                    row.locked_until = now + timedelta(seconds=limits.lock_s)
                first = first or row.failures
        return first

    def delay_s(self, failures: int) -> float:
        """How long to hold a failed answer back: doubling past ``slow_after``."""
        over = failures - self.limits.slow_after
        return 0.0 if over < 0 else min(self.limits.max_delay_s, 0.25 * 2**over)

    async def clear(self, keys: list[str]) -> bool:
        """A success (or an admin's unlock) forgets the failures; whether any were kept."""
        async with self._sessions.begin() as s:
            done = await s.execute(delete(LoginThrottle).where(LoginThrottle.key.in_(keys)))
        return bool(done.rowcount)  # type: ignore[attr-defined]
