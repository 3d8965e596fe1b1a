"""The error taxonomy: every failure the platform reports, rendered in OpenAI's error shape.

Errors cross Ray process boundaries (a provider deployment raises, the gateway renders), so
each one pickles by its constructor arguments and carries everything the HTTP layer needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forge.routing.provider_limits import UpstreamLimits


class ForgeError(Exception):
    """Base of all errors that map to an HTTP status and an OpenAI error body."""

    status_code: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after
        self.provider = provider

    def __reduce__(self) -> tuple[Any, ...]:
        kwargs = {
            "param": self.param,
            "code": self.code,
            "retry_after": self.retry_after,
            "provider": self.provider,
        }
        return (_rebuild, (type(self), self.message, kwargs))

    def to_body(self) -> dict[str, Any]:
        """The JSON body OpenAI's API returns for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(0, round(self.retry_after)))}


def _rebuild(cls: type[ForgeError], message: str, kwargs: dict[str, Any]) -> ForgeError:
    return cls(message, **kwargs)


class InvalidRequest(ForgeError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class AuthenticationFailed(ForgeError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(ForgeError):
    status_code = 403
    error_type = "permission_error"
    default_code = "insufficient_permissions"


class NotFound(ForgeError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class Conflict(ForgeError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLarge(ForgeError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(ForgeError):
    """A 429. Raised as such by the platform's own limits and budgets, which are the
    caller's, not the model's: they never send a request to a fallback model.
    ``limit_headers``: OpenAI's ``x-ratelimit-*`` for the limit that refused."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, limit_headers: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.limit_headers = limit_headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        cls, (kind, message, kwargs) = super().__reduce__()
        return (cls, (kind, message, {**kwargs, "limit_headers": self.limit_headers}))

    def headers(self) -> dict[str, str]:
        """Retry-After in whole seconds, rounded up (and in milliseconds, which the
        official SDKs read first), with the limit's headers."""
        if self.retry_after is None:
            return dict(self.limit_headers)
        return {
            "retry-after": str(max(0, math.ceil(self.retry_after))),
            "retry-after-ms": str(max(0, math.ceil(self.retry_after * 1000))),
            **self.limit_headers,
        }


class UpstreamRateLimited(RateLimited):
    """The provider's 429: another model (a fallback) may well answer. ``limits``: the
    provider's rate-limit headers with it, parsed, if it sent some (set by the provider)."""

    limits: UpstreamLimits | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        reduced = super().__reduce__()
        return reduced if self.limits is None else (*reduced, {"limits": self.limits})


class UpstreamError(ForgeError):
    """The provider answered with a server error or could not be reached."""

    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    status_code = 503
    default_code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    default_code = "upstream_timeout"


class ServiceUnavailable(ForgeError):
    """A part of the platform itself is not ready (replica starting, actor restarting)."""

    status_code = 503
    error_type = "server_error"
    default_code = "service_unavailable"


def _kinds() -> list[type[ForgeError]]:
    """Every error class, each after its parents."""
    out: list[type[ForgeError]] = []
    todo: list[type[ForgeError]] = [ForgeError]
    while todo:
        cls = todo.pop(0)
        out.append(cls)
        todo += cls.__subclasses__()
    return out


def status_of_body(error: Mapping[str, Any]) -> int:
    """The HTTP status of the error an OpenAI error object describes, for errors that
    arrive without one (inside a stream): the class that declares its ``type`` and
    ``code``, else the most general class of its ``type`` (the base class aside: a
    platform error is never a bare 500)."""
    kinds = _kinds()
    code, kind = error.get("code"), error.get("type")
    for cls in kinds:
        if code is not None and (cls.error_type, cls.default_code) == (kind, code):
            return cls.status_code
    for cls in kinds[1:]:
        if cls.error_type == kind:
            return cls.status_code
    return ForgeError.status_code


def unwrap_remote(exc: BaseException) -> BaseException:
    """Return the original exception behind a Ray task error, or ``exc`` itself.

    Ray wraps exceptions raised in a deployment in ``RayTaskError``; its ``cause`` is the
    exception that the deployment raised.
    """
    for _ in range(5):
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException):
            break
        exc = cause
    return exc
