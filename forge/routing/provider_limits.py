"""Provider rate limits: hold back what the provider would refuse, and let the waiting
requests go in priority order.

One ``ProviderQueue`` per provider account (and gateway replica) combines two views:

- the account's configured ``rpm`` / ``tpm`` (``ProviderRateLimits``), kept here as two
  token buckets (capacity the per-minute limit, refilled continuously at limit/60 a
  second), charged by each request's estimated tokens and corrected by ``Ticket.settle``;
- the provider's own view: its ``x-ratelimit-*`` / ``anthropic-ratelimit-*`` headers
  (``parse_rate_limit_headers`` -> ``UpstreamLimits`` -> ``observe``), its Retry-After, and
  its 429s (``refused``). Requests reported remaining are charged one per request sent
  until the next report; tokens reported remaining are not charged with the platform's
  estimate (each provider counts differently: OpenAI prompt plus ``max_tokens``,
  Anthropic input and output apart, cached input not at all), so they hold traffic only
  once the provider says none are left, until they refill or reset.

Why token buckets rather than a sliding 60 s window: OpenAI and Anthropic both replenish
continuously (their ``reset`` is when the bucket is full again, not when a window rolls
over), so a bucket waits exactly as long as the provider would; a bucket is O(1) state
where a window keeps every request of the last minute; and a token correction is one
addition to its level, where a window would have to find and rewrite the request's entry.

Waiters are served strictly in ``Priority`` order (plan rank, live before batch, then
arrival): a small request never overtakes a larger one ahead of it, so a big request of a
high plan cannot starve. A request whose wait (estimated from what is ahead of it) is
longer than the bound is refused at once with a 429 and that wait as Retry-After; a waiter
pushed past its bound later (by higher-priority arrivals, an upstream 429) is refused when
it reaches the head of the queue unable to go in time, or when its bound passes.

Nothing here busy-waits: one timer per queue, set for when the first waiter may go or the
earliest deadline passes. With no limit configured and no header seen, ``acquire`` returns
at once without awaiting anything. Not thread-safe: one event loop per queue.
"""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import itertools
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from forge.config import DEFAULT_MAX_WAIT_S, ProviderRateLimits
from forge.errors import UpstreamRateLimited

__all__ = ["DEFAULT_MAX_WAIT_S", "ProviderRateLimits"]  # re-exported: declared in forge.config

# Remaining 0 without a reset instant, or a 429 without Retry-After: hold this long.
FALLBACK_RESET_S = 1.0
# The code of the 429 this queue raises itself (an upstream's own 429 keeps its code).
QUEUE_REFUSAL_CODE = "provider_rate_limited"
_SLACK_S = 1e-6  # timers may fire this early; a wait shorter than this is no wait


# ----------------------------------------------------------------------------- headers


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """The provider's rate-limit state, as its response headers told it.

    Instants are in the clock of the process that parsed the headers (``observed_at`` is
    that clock's reading then), so that a queue in another process, or on another host,
    can rebase them onto its own (``ProviderQueue.observe``). For tokens, the tightest of
    the limits reported (Anthropic's tokens / input-tokens / output-tokens)."""

    observed_at: float
    limit_requests: int | None = None
    remaining_requests: int | None = None
    requests_reset_at: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    tokens_reset_at: float | None = None
    retry_at: float | None = None


_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|μs|ns)")
_UNITS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
}


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration as OpenAI writes them ("1s", "6m0s", "20ms",
    "1h2m3.5s"), or a bare number of seconds (Azure); ``None`` if it is neither."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    total, pos = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if pos and pos == len(text) else None


def _count(text: str | None) -> int | None:
    """A non-negative count; Azure's ``-1`` (unknown) and anything malformed: ``None``."""
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _timestamp_in(text: str, wall_now: float) -> float | None:
    """Seconds from ``wall_now`` to an RFC 3339 instant (0 if it is past)."""
    try:
        instant = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return max(0.0, instant.timestamp() - wall_now)


def _retry_after_in(found: Mapping[str, str], wall_now: float) -> float | None:
    """Seconds from ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    raw_ms = found.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            pass
        else:
            if math.isfinite(ms) and ms >= 0:
                return ms / 1000
    raw = found.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - wall_now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _at(now: float, delay: float | None) -> float | None:
    return None if delay is None else now + delay


def parse_rate_limit_headers(
    headers: Mapping[str, str], now: float, *, wall_now: float | None = None
) -> UpstreamLimits | None:
    """The rate-limit state in a provider's response headers, or ``None`` if they carry
    none. ``now``: this process's monotonic clock (the instants returned are on it);
    ``wall_now``: the wall clock (default ``time.time()``), for Anthropic's RFC 3339
    resets and HTTP-date Retry-Afters. Malformed values are ignored; this never raises.

    OpenAI (and Azure, and most OpenAI-compatible APIs): ``x-ratelimit-{limit,remaining,
    reset}-{requests,tokens}``, resets as durations. Anthropic: ``anthropic-ratelimit-
    {requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``, resets as RFC
    3339 instants. Both: ``retry-after-ms`` / ``retry-after``.
    """
    found: dict[str, str] = {}
    for key, value in headers.items():  # one pass: headers are searched linearly anyway
        if key.startswith(_PREFIXES) or key.lower().startswith(_PREFIXES):
            found[key.lower()] = value
    if not found:
        return None
    if wall_now is None:
        wall_now = time.time()
    get = found.get

    limit_requests = _count(get("x-ratelimit-limit-requests"))
    remaining_requests = _count(get("x-ratelimit-remaining-requests"))
    raw = get("x-ratelimit-reset-requests")
    requests_reset = None if raw is None else parse_duration(raw)
    limit_tokens = _count(get("x-ratelimit-limit-tokens"))
    remaining_tokens = _count(get("x-ratelimit-remaining-tokens"))
    raw = get("x-ratelimit-reset-tokens")
    tokens_reset = None if raw is None else parse_duration(raw)

    if remaining_requests is None:
        remaining_requests = _count(get("anthropic-ratelimit-requests-remaining"))
        if remaining_requests is not None:
            limit_requests = _count(get("anthropic-ratelimit-requests-limit"))
            raw = get("anthropic-ratelimit-requests-reset")
            requests_reset = None if raw is None else _timestamp_in(raw, wall_now)
    if remaining_tokens is None:
        for kind in ("tokens", "input-tokens", "output-tokens"):
            remaining = _count(get(f"anthropic-ratelimit-{kind}-remaining"))
            if remaining is None:
                continue
            if remaining_tokens is not None and remaining >= remaining_tokens:
                continue  # the tighter one counts
            remaining_tokens = remaining
            limit_tokens = _count(get(f"anthropic-ratelimit-{kind}-limit"))
            raw = get(f"anthropic-ratelimit-{kind}-reset")
            tokens_reset = None if raw is None else _timestamp_in(raw, wall_now)

    retry_after = _retry_after_in(found, wall_now)
    if remaining_requests is None and remaining_tokens is None and retry_after is None:
        return None
    return UpstreamLimits(
        observed_at=now,
        limit_requests=limit_requests if remaining_requests is not None else None,
        remaining_requests=remaining_requests,
        requests_reset_at=_at(now, requests_reset) if remaining_requests is not None else None,
        limit_tokens=limit_tokens if remaining_tokens is not None else None,
        remaining_tokens=remaining_tokens,
        tokens_reset_at=_at(now, tokens_reset) if remaining_tokens is not None else None,
        retry_at=_at(now, retry_after),
    )


# ----------------------------------------------------------------------------- the queue


@dataclass(frozen=True, slots=True)
class Priority:
    """Where a request waits: ``rank`` first (lower goes first; the caller maps the
    organisation's plan to it), then ``live`` (interactive) before batch, then arrival."""

    rank: int = 0
    live: bool = True


LIVE = Priority()
BATCH = Priority(live=False)


class _Bucket:
    """A token bucket: ``level`` at ``at``, refilled at ``rate`` a second up to ``cap``.
    The level may go negative (a correction after the fact): later requests repay it.
    An upstream's bucket is forgotten at ``until`` (its reset: full, so no constraint)."""

    __slots__ = ("at", "cap", "level", "rate", "until")

    def __init__(
        self, cap: float | None, rate: float, level: float, at: float, until: float = math.inf
    ) -> None:
        self.cap = cap
        self.rate = rate
        self.level = level
        self.at = at
        self.until = until

    def refill(self, now: float) -> float:
        if now > self.at:
            level = self.level + self.rate * (now - self.at)
            if self.cap is not None and level > self.cap:
                level = self.cap
            self.level, self.at = level, now
        return self.level

    def take(self, amount: float, now: float) -> None:
        """Charge ``amount`` (a negative one refunds)."""
        level = self.refill(now) - amount
        if self.cap is not None and level > self.cap:
            level = self.cap
        self.level = level

    def wait(self, need: float, now: float) -> float:
        """Seconds until the level reaches ``need``."""
        level = self.refill(now)
        if level >= need:
            return 0.0
        if self.rate > 0:
            return min((need - level) / self.rate, self.until - now)
        return self.until - now


def _upstream_bucket(
    limit: int | None, remaining: int, reset_at: float | None, now: float
) -> _Bucket | None:
    """The provider's bucket as reported: ``remaining`` now, full at ``reset_at``; refilled
    linearly in between when its size is known (both providers replenish continuously)."""
    until = reset_at if reset_at is not None else now + FALLBACK_RESET_S
    if until <= now:
        return None
    rate = (limit - remaining) / (until - now) if limit is not None and limit > remaining else 0.0
    return _Bucket(limit, rate, remaining, now, until)


class Ticket:
    """Leave to send one request: ``settle`` it with the tokens the request really used
    (once known), or ``release`` it if the request was never sent."""

    __slots__ = ("_queue", "tokens")

    def __init__(self, queue: ProviderQueue | None, tokens: int) -> None:
        self._queue = queue
        self.tokens = tokens

    def settle(self, actual_tokens: int) -> None:
        """Correct the estimate the request was charged with to ``actual_tokens``."""
        queue = self._queue
        if queue is None or actual_tokens == self.tokens:
            return
        delta, self.tokens = actual_tokens - self.tokens, actual_tokens
        queue._charge(0, delta)

    def release(self) -> None:
        """Give the request's place back (it was not sent); later calls do nothing."""
        queue, self._queue = self._queue, None
        if queue is not None:
            queue._charge(-1, -self.tokens)


FREE = Ticket(None, 0)  # what an unlimited queue hands out: settling it does nothing


class _Waiter:
    __slots__ = ("deadline", "future", "key", "tokens")

    def __init__(
        self,
        key: tuple[int, bool, int],
        tokens: int,
        deadline: float,
        future: asyncio.Future[Ticket],
    ) -> None:
        self.key = key
        self.tokens = tokens
        self.deadline = deadline
        self.future = future


class ProviderQueue:
    """The requests waiting for one provider account's capacity (see the module doc).

    Life of a request: ``ticket = await queue.acquire(estimate, priority)`` just before
    sending; ``queue.observe(reply.limits)`` when the answer (or stream head) brings
    limits; ``queue.refused(err.retry_after)`` (and ``observe(err.limits)``) on the
    provider's 429; ``ticket.settle(usage)`` when the usage is known; ``ticket.release()``
    if it was never sent."""

    def __init__(
        self,
        name: str,
        limits: ProviderRateLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.max_wait_s = limits.max_wait_s if limits is not None else DEFAULT_MAX_WAIT_S
        self._clock = clock
        now = clock()
        rpm = limits.rpm if limits is not None else None
        tpm = limits.tpm if limits is not None else None
        self._rpm = _Bucket(rpm, rpm / 60, rpm, now) if rpm else None
        self._tpm = _Bucket(tpm, tpm / 60, tpm, now) if tpm else None
        self._up_requests: _Bucket | None = None
        self._up_tokens: _Bucket | None = None
        self._hold_until = -math.inf
        self._free = self._rpm is None and self._tpm is None
        self._heap: list[tuple[int, bool, int, _Waiter]] = []
        self._deadlines: list[tuple[float, int, _Waiter]] = []
        self._live = 0
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def depth(self) -> int:
        """Requests waiting now."""
        return self._live

    # ------------------------------------------------------------------ the caller's side

    async def acquire(
        self, tokens: int, priority: Priority = LIVE, *, deadline: float | None = None
    ) -> Ticket:
        """Wait until a request of about ``tokens`` tokens may go to the provider.

        ``deadline``: the caller's own, on this queue's clock (``time.monotonic``), if
        sooner than ``max_wait_s`` from now. Raises ``UpstreamRateLimited`` (429, naming
        the provider, Retry-After the wait it would need) when the wait would pass it.
        Cancelling the call gives its place (or its ticket, if granted) back."""
        if self._free:
            return FREE
        now = self._clock()
        self._expire(now)
        if self._free:
            return FREE
        if not self._live and self._wait(1, self._clamp(tokens), now) <= _SLACK_S:
            self._charge(1, tokens, now)
            return Ticket(self, tokens)
        limit = now + self.max_wait_s
        if deadline is not None and deadline < limit:
            limit = deadline
        key = (priority.rank, not priority.live, next(self._seq))
        wait = self._estimate(key, tokens, now)
        if now + wait > limit:
            raise self._refusal(wait, limit - now)
        loop = self._loop = asyncio.get_running_loop()
        waiter = _Waiter(key, tokens, limit, loop.create_future())
        heapq.heappush(self._heap, (*key, waiter))
        heapq.heappush(self._deadlines, (limit, key[2], waiter))
        self._live += 1
        self._pump()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if not future.done() or future.cancelled():
                future.cancel()
                self._forget()
            elif future.exception() is None:
                future.result().release()  # granted just as it was cancelled
            raise

    def observe(self, limits: UpstreamLimits) -> None:
        """Take the provider's latest view (from a reply's, stream head's or 429's headers)."""
        now = self._clock()
        shift = now - limits.observed_at  # its instants, on this queue's clock
        if limits.remaining_requests is not None:
            self._up_requests = _upstream_bucket(
                limits.limit_requests,
                limits.remaining_requests,
                None if limits.requests_reset_at is None else limits.requests_reset_at + shift,
                now,
            )
        if limits.remaining_tokens is not None:
            self._up_tokens = _upstream_bucket(
                limits.limit_tokens,
                limits.remaining_tokens,
                None if limits.tokens_reset_at is None else limits.tokens_reset_at + shift,
                now,
            )
        if limits.retry_at is not None:
            self._hold_until = max(self._hold_until, limits.retry_at + shift)
        self._free = False
        if self._live:
            self._pump()

    def refused(self, retry_after_s: float | None = None) -> None:
        """The provider answered 429: send nothing more until ``retry_after_s`` from now."""
        if retry_after_s is None or not math.isfinite(retry_after_s) or retry_after_s < 0:
            retry_after_s = FALLBACK_RESET_S
        self._hold_until = max(self._hold_until, self._clock() + retry_after_s)
        self._free = False
        if self._live:
            self._pump()

    def wake(self) -> None:
        """Look at the waiters again now (the timer does this; a test's fake clock too)."""
        if self._live:
            self._pump()

    # ------------------------------------------------------------------ inside

    def _clamp(self, tokens: int) -> float:
        """A single request larger than the whole TPM goes once the bucket is full."""
        tpm = self._tpm
        return tokens if tpm is None or tpm.cap is None else min(tokens, tpm.cap)

    def _expire(self, now: float) -> None:
        if self._up_requests is not None and self._up_requests.until <= now:
            self._up_requests = None
        if self._up_tokens is not None and self._up_tokens.until <= now:
            self._up_tokens = None
        self._free = (
            self._rpm is None
            and self._tpm is None
            and self._up_requests is None
            and self._up_tokens is None
            and self._hold_until <= now
            and not self._live  # else a newcomer would overtake those waiting
        )

    def _wait(self, requests: int, tokens: float, now: float) -> float:
        """Seconds until ``requests`` requests of ``tokens`` tokens in all may go."""
        wait = self._hold_until - now
        if self._rpm is not None:
            wait = max(wait, self._rpm.wait(requests, now))
        if self._tpm is not None:
            wait = max(wait, self._tpm.wait(tokens, now))
        if self._up_requests is not None:
            wait = max(wait, self._up_requests.wait(requests, now))
        if self._up_tokens is not None:  # not charged: wait only for it to be non-empty
            wait = max(wait, self._up_tokens.wait(1, now))
        return max(wait, 0.0)

    def _estimate(self, key: tuple[int, bool, int], tokens: int, now: float) -> float:
        """The wait of a request at ``key``: after everything ahead of it, then its own."""
        requests, total = 1, self._clamp(tokens)
        for entry in self._heap:
            waiter = entry[3]
            if waiter.key < key and not waiter.future.done():
                requests += 1
                total += self._clamp(waiter.tokens)
        return self._wait(requests, total, now)

    def _charge(self, requests: int, tokens: float, now: float | None = None) -> None:
        """Charge (or, negative, refund) the buckets that count what is sent."""
        if now is None:
            now = self._clock()
        if self._rpm is not None and requests:
            self._rpm.take(requests, now)
        if self._tpm is not None and tokens:
            self._tpm.take(tokens, now)
        if self._up_requests is not None and requests:
            self._up_requests.take(requests, now)
        if (requests < 0 or tokens < 0) and self._live:
            self._pump()

    def _refusal(self, wait: float, budget: float) -> UpstreamRateLimited:
        return UpstreamRateLimited(
            f"Provider {self.name!r} is at its rate limit: the next place to send this "
            f"request is {wait:.1f}s away, longer than it may wait ({max(budget, 0):.1f}s).",
            code=QUEUE_REFUSAL_CODE,
            retry_after=max(wait, 0.001),
            provider=self.name,
        )

    def _forget(self) -> None:
        """A waiter was cancelled: its entries stay (skipped) until popped or compacted."""
        self._live -= 1
        if len(self._heap) > 2 * self._live + 16:
            self._heap = [e for e in self._heap if not e[3].future.done()]
            heapq.heapify(self._heap)
            self._deadlines = [e for e in self._deadlines if not e[2].future.done()]
            heapq.heapify(self._deadlines)
        if self._live:
            self._pump()

    def _fail(self, waiter: _Waiter, wait: float, now: float) -> None:
        self._live -= 1
        waiter.future.set_exception(self._refusal(wait, waiter.deadline - now))

    def _pump(self) -> None:
        """Let go every waiter that may go now, in order; refuse those that cannot make
        their deadline; set the timer for the next moment anything can change."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._clock()
        self._expire(now)
        deadlines = self._deadlines
        while deadlines and (deadlines[0][2].future.done() or deadlines[0][0] <= now):
            waiter = heapq.heappop(deadlines)[2]
            if not waiter.future.done():
                self._fail(waiter, self._estimate(waiter.key, waiter.tokens, now), now)
        heap = self._heap
        head_wait = math.inf
        while heap:
            waiter = heap[0][3]
            if waiter.future.done():
                heapq.heappop(heap)
                continue
            wait = self._wait(1, self._clamp(waiter.tokens), now)
            if wait <= _SLACK_S:
                heapq.heappop(heap)
                self._live -= 1
                self._charge(1, waiter.tokens, now)
                waiter.future.set_result(Ticket(self, waiter.tokens))
            elif now + wait > waiter.deadline:
                heapq.heappop(heap)
                self._fail(waiter, wait, now)
            else:
                head_wait = wait
                break
        if not self._live or self._loop is None:
            return
        while deadlines and deadlines[0][2].future.done():
            heapq.heappop(deadlines)
        delay = head_wait
        if deadlines:
            delay = min(delay, deadlines[0][0] - now)
        if math.isfinite(delay):
            self._timer = self._loop.call_later(max(delay, 0.0), self._pump)


class ProviderQueues:
    """Every provider account's queue in this gateway replica, by provider name."""

    def __init__(
        self,
        limits: Mapping[str, ProviderRateLimits | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._queues = {name: ProviderQueue(name, cfg, clock=clock) for name, cfg in limits.items()}

    def get(self, name: str) -> ProviderQueue:
        """The provider's queue (one without configured limits for a name not given)."""
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = ProviderQueue(name, clock=self._clock)
        return queue

    def depths(self) -> dict[str, int]:
        """Requests waiting, by provider (for /metrics)."""
        return {name: queue.depth for name, queue in self._queues.items()}
