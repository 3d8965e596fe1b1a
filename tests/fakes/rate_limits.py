"""The rate-limit headers the fakes send when asked to (``rate_limits=(rpm, tpm)``):
OpenAI's ``x-ratelimit-*`` (resets as Go durations) and Anthropic's
``anthropic-ratelimit-*`` (resets as RFC 3339 instants), from token buckets that refill
continuously, as both providers' do (``reset``: when the bucket is full again)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes it: "20ms", "1.5s", "6m0s", "1h2m3s"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


def rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> float:
    """The buckets' clock (a test that counts requests freezes it: a slow machine's
    pauses would refill them)."""
    return time.monotonic()


class _Bucket:
    def __init__(self, size: int) -> None:
        self.size = size
        self.level = float(size)
        self.at = now()

    def charge(self, amount: int) -> tuple[int, float]:
        """Remaining after ``amount``, and seconds until full again."""
        now_s = now()
        self.level = min(self.size, self.level + self.size / 60 * (now_s - self.at))
        self.at = now_s
        self.level = max(0.0, self.level - amount)
        return int(self.level), (self.size - self.level) / (self.size / 60)


class RateLimitHeaders:
    """Per-minute request and token buckets, charged once per response."""

    def __init__(self, rpm: int, tpm: int, style: str) -> None:
        self.requests = _Bucket(rpm)
        self.tokens = _Bucket(tpm)
        self.style = style  # "openai" or "anthropic"

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        try:
            body: Any = orjson.loads(await request.read())  # read before: cached
        except (orjson.JSONDecodeError, ValueError):
            body = {}
        body = body if isinstance(body, dict) else {}
        prompt = max(1, len(orjson.dumps(body.get("messages") or body.get("prompt") or "")) // 4)
        output = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        left_requests, full_requests = self.requests.charge(1)
        left_tokens, full_tokens = self.tokens.charge(prompt + output)
        if self.style == "openai":
            response.headers.update(
                {
                    "x-ratelimit-limit-requests": str(self.requests.size),
                    "x-ratelimit-limit-tokens": str(self.tokens.size),
                    "x-ratelimit-remaining-requests": str(left_requests),
                    "x-ratelimit-remaining-tokens": str(left_tokens),
                    "x-ratelimit-reset-requests": go_duration(full_requests),
                    "x-ratelimit-reset-tokens": go_duration(full_tokens),
                }
            )
            return
        wall = time.time()
        families = {
            "requests": (self.requests.size, left_requests, full_requests),
            "tokens": (self.tokens.size, left_tokens, full_tokens),
            # Anthropic counts input and output apart; the fake splits its one bucket.
            "input-tokens": (self.tokens.size, left_tokens, full_tokens),
            "output-tokens": (self.tokens.size // 5, left_tokens // 5, full_tokens),
        }
        for kind, (size, left, full) in families.items():
            response.headers[f"anthropic-ratelimit-{kind}-limit"] = str(size)
            response.headers[f"anthropic-ratelimit-{kind}-remaining"] = str(left)
            response.headers[f"anthropic-ratelimit-{kind}-reset"] = rfc3339(wall + full)
