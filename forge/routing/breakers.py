"""Circuit breakers per target: stop sending to a target that keeps failing, probe it
after a cooldown, and share what one gateway replica learns with all of them.

A target's breaker is closed (traffic flows), open (refused until ``until``: after
``failures`` consecutive failures, or an upstream 429 whose Retry-After is too long to
wait out) or half-open (the cooldown is over; one request probes it: success closes the
breaker, failure opens it again for twice as long, up to ``max_cooldown_s``).

Each replica decides on its own, on the hot path, from its own breakers (a dictionary
lookup). Opening and closing are published to a ``BreakerBoard`` held by an actor, and
every replica long-polls the board, so one replica's discovery protects the others
within a round trip. Times are wall-clock (``time.time``) because they cross processes
and nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from forge.config import BreakerConfig

State = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]


class Opening(BaseModel):
    """An open breaker as the board publishes it (``rate_limited``: held back by the
    provider's own 429, not by failures)."""

    until: float
    reason: str
    rate_limited: bool = False


class BreakerNews(BaseModel):
    feed_id: str
    epoch: int
    open: dict[str, Opening]


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    until: float = 0.0  # open while now < until; 0: closed
    cooldown_s: float = 0.0
    reason: str = ""
    probing: bool = False  # a half-open probe is out
    shared: bool = False  # opened by another replica (through the board)
    rate_limited: bool = False  # open because the provider said to wait (a 429)


Publish = Callable[[str, Opening | None], None]


class Breakers:
    """One replica's breakers. ``publish(key, opening)`` is told each open (an
    ``Opening``) and close (``None``) that this replica decides."""

    def __init__(
        self, config: BreakerConfig, clock: Clock = time.time, publish: Publish | None = None
    ) -> None:
        self._config = config
        self._clock = clock
        self._publish = publish
        self._breakers: dict[str, _Breaker] = {}

    def now(self) -> float:
        return self._clock()

    def state(self, key: str) -> State:
        b = self._breakers.get(key)
        if b is None or not b.until:
            return "closed"
        return "open" if self._clock() < b.until else "half_open"

    def blocked_until(self, key: str) -> float | None:
        """When ``key`` may be tried again, or None when it may be now. Past its
        cooldown an open breaker lets one probe through (and blocks the rest meanwhile)."""
        b = self._breakers.get(key)
        if b is None or not b.until:
            return None
        now = self._clock()
        if now < b.until:
            return b.until
        if b.probing:
            return now + self._config.cooldown_s  # a probe is out: wait for its answer
        return None

    def reason(self, key: str) -> str:
        b = self._breakers.get(key)
        return b.reason if b is not None else ""

    def rate_limited(self, key: str) -> bool:
        """Whether ``key`` is held back by the provider's own 429, not by failures."""
        b = self._breakers.get(key)
        return b is not None and b.rate_limited

    def attempt(self, key: str) -> None:
        """A call to ``key`` starts; if its breaker is half-open, it is the probe."""
        b = self._breakers.get(key)
        if b is not None and b.until and self._clock() >= b.until:
            b.probing = True

    def release(self, key: str) -> None:
        """A call ended saying nothing of the target (cancelled, the caller's own error):
        if it was the half-open probe, the next call may probe instead."""
        b = self._breakers.get(key)
        if b is not None:
            b.probing = False

    def success(self, key: str) -> None:
        b = self._breakers.get(key)
        if b is None:
            return
        was_open = bool(b.until)
        del self._breakers[key]
        if was_open and self._publish is not None:
            self._publish(key, None)

    def failure(self, key: str, reason: str) -> None:
        b = self._breakers.setdefault(key, _Breaker())
        b.failures += 1
        if b.probing:  # the probe failed: open again, for longer
            b.probing = False
            self._open(key, b, min(b.cooldown_s * 2, self._config.max_cooldown_s), reason)
        elif not b.until and b.failures >= self._config.failures:
            self._open(key, b, self._config.cooldown_s, f"{b.failures} failures in a row: {reason}")

    def cool_down(self, key: str, seconds: float, reason: str) -> None:
        """Refuse ``key`` for ``seconds`` (the upstream said so: a long Retry-After)."""
        b = self._breakers.setdefault(key, _Breaker())
        if self._clock() + seconds > b.until:
            self._open(key, b, seconds, reason, rate_limited=True)

    def _open(
        self, key: str, b: _Breaker, seconds: float, reason: str, rate_limited: bool = False
    ) -> None:
        b.cooldown_s = seconds
        b.until = self._clock() + seconds
        b.reason = reason
        b.rate_limited = rate_limited
        b.shared = b.probing = False
        if self._publish is not None:
            self._publish(key, Opening(until=b.until, reason=reason, rate_limited=rate_limited))

    def apply(self, news: BreakerNews) -> None:
        """Take the board's open breakers as this replica's own; close those the board
        opened that it no longer lists (a replica's probe succeeded)."""
        for key, opening in news.open.items():
            b = self._breakers.setdefault(key, _Breaker())
            if opening.until > b.until:
                b.until, b.reason, b.shared, b.probing = opening.until, opening.reason, True, False
                b.rate_limited = opening.rate_limited
                b.cooldown_s = max(b.cooldown_s, self._config.cooldown_s)
        for key in [k for k, b in self._breakers.items() if b.shared and k not in news.open]:
            del self._breakers[key]

    def forget_shared(self) -> None:
        """The board restarted: what it told us may be stale."""
        for key in [k for k, b in self._breakers.items() if b.shared]:
            del self._breakers[key]


class BreakerBoard:
    """The breakers every replica shares. In memory: a restarted board is a new feed,
    and replicas drop what the old one told them. Hosted by the rate limiter's actor
    (cooldowns are the providers' limits; one actor process less), hence the prefixed
    attribute names."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._board_clock = clock
        self._board_feed = uuid.uuid4().hex
        self._board_epoch = 0
        self._board_open: dict[str, Opening] = {}
        self._board_changed: asyncio.Event | None = None

    async def trip(self, key: str, until: float, reason: str, rate_limited: bool = False) -> bool:
        """Open ``key``'s breaker until ``until``; True when it was not open before (a
        new opening, which its publisher announces)."""
        current = self._board_open.get(key)
        opened = current is None or current.until <= self._board_clock()
        if current is None or until > current.until:
            self._board_open[key] = Opening(until=until, reason=reason, rate_limited=rate_limited)
            self._board_bump()
        return opened

    async def clear(self, key: str) -> bool:
        """Close ``key``'s breaker; True when it was open."""
        if self._board_open.pop(key, None) is None:
            return False
        self._board_bump()
        return True

    async def breakers_since(
        self, feed_id: str | None, epoch: int, timeout_s: float
    ) -> BreakerNews:
        """The open breakers once the board has changed after ``epoch`` (or at once, to a
        caller new to this feed), waiting up to ``timeout_s``."""
        if feed_id == self._board_feed and epoch >= self._board_epoch:
            if self._board_changed is None:
                self._board_changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._board_changed.wait(), timeout_s)
        now = self._board_clock()
        for key in [k for k, o in self._board_open.items() if o.until <= now - 3600]:
            del self._board_open[key]  # long past: a probe's result never came
        return BreakerNews(
            feed_id=self._board_feed, epoch=self._board_epoch, open=dict(self._board_open)
        )

    def _board_bump(self) -> None:
        self._board_epoch += 1
        if self._board_changed is not None:
            self._board_changed.set()
            self._board_changed = None
