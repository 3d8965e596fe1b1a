"""Mapping an upstream's HTTP failure to the platform's error taxonomy."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

from forge.errors import (
    AuthenticationFailed,
    Conflict,
    ForgeError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)

DEFAULT_RETRY_AFTER_S = 1.0


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return float(raw_ms) / 1000
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def _detail(body: Any) -> tuple[str | None, str | None, str | None]:
    """(message, param, code) from an OpenAI-style error body, if it is one."""
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            msg = err.get("message")
            param = err.get("param")
            code = err.get("code")
            return (
                msg if isinstance(msg, str) else None,
                param if isinstance(param, str) else None,
                str(code) if isinstance(code, str | int) else None,
            )
        if isinstance(err, str):
            return err, None, None
    return None, None, None


def status_error(provider: str, status: int, body: Any, headers: Mapping[str, str]) -> ForgeError:
    """The platform error for an upstream's non-2xx answer."""
    message, param, code = _detail(body)
    text = message or f"HTTP {status}"
    where = f"Provider {provider!r}"
    if status == 400 or status == 422:
        return InvalidRequest(text, param=param, code=code, provider=provider)
    if status == 401:
        return AuthenticationFailed(
            f"{where} rejected the platform's credentials: {text}",
            code="provider_authentication_failed",
            provider=provider,
        )
    if status == 403:
        return PermissionDenied(f"{where} refused the request: {text}", provider=provider)
    if status == 404:
        return ModelNotFound(
            f"{where}: {text}", param=param or "model", code=code, provider=provider
        )
    if status == 409:
        return Conflict(text, provider=provider)
    if status == 413:
        return PayloadTooLarge(f"{where}: {text}", provider=provider)
    if status == 429:
        # Every 429 the platform sends carries Retry-After, even when the upstream's did not.
        return UpstreamRateLimited(
            f"{where} is rate limiting: {text}",
            code=code or "rate_limit_exceeded",
            retry_after=retry_after_seconds(headers) or DEFAULT_RETRY_AFTER_S,
            provider=provider,
        )
    if status in (503, 529):
        return UpstreamUnavailable(
            f"{where} is unavailable (HTTP {status}): {text}",
            retry_after=retry_after_seconds(headers),
            provider=provider,
        )
    if 400 <= status < 500:
        return InvalidRequest(f"{where}: {text}", param=param, code=code, provider=provider)
    return UpstreamError(f"{where} failed (HTTP {status}): {text}", provider=provider)
