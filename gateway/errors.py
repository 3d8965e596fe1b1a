"""One place where every failure becomes OpenAI's error shape with the right status."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from forge.errors import (
    ForgeError,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    status_of_body,
    unwrap_remote,
)

log = logging.getLogger(__name__)

_STATUS_TYPES = {404: NotFound, 405: InvalidRequest}

# Every error answer of this process, by (status, code): the platform's own refusals
# (401, 403, 429, 400…) leave no usage record, so the recorder's counts cannot see them;
# replicas report these with their state, and /metrics sums them (gateway/metrics.py).
ANSWERED_ERRORS: Counter[tuple[int, str]] = Counter()


ANTHROPIC_PREFIX = "/v1/messages"
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error_body(error: ForgeError) -> dict[str, Any]:
    """Anthropic's error shape, for the Anthropic-compatible routes."""
    kind = ANTHROPIC_TYPES.get(error.status_code, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def anthropic_stream_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped error from inside a stream as Anthropic's ``error`` event: the
    same type its HTTP answer would have had (the one mapping, by status)."""
    kind = ANTHROPIC_TYPES.get(status_of_body(error), "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.get("message", "")}}


def error_response(error: ForgeError, path: str = "") -> Response:
    """The error in the shape of the API that was called: Anthropic's under /v1/messages,
    OpenAI's everywhere else."""
    body = anthropic_error_body(error) if path.startswith(ANTHROPIC_PREFIX) else error.to_body()
    ANSWERED_ERRORS[error.status_code, error.code or error.error_type] += 1
    return Response(
        orjson.dumps(body),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers(),
    )


def answered_errors() -> dict[str, int]:
    """``ANSWERED_ERRORS`` as a replica reports it: ``"<status> <code>"`` -> count."""
    return {f"{status} {code}": n for (status, code), n in ANSWERED_ERRORS.items()}


def param_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """OpenAI's ``param`` spelling of a validation location: ``messages[0].role``."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path", "header") and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "literal[", "list[")):
            out += ("." if out else "") + part
    return out or None


def validation_error(errors: list[dict[str, Any]]) -> InvalidRequest:
    first = errors[0]
    param = param_path(first.get("loc", ()))
    msg = first.get("msg", "Invalid value")
    where = f" for '{param}'" if param else ""
    return InvalidRequest(f"Invalid value{where}: {msg}.", param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ForgeError)
    async def _forge(request: Request, exc: ForgeError) -> Response:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(list(exc.errors())), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        cls = _STATUS_TYPES.get(exc.status_code, InvalidRequest)
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":  # no route matched
            message = f"Invalid URL ({request.method} {request.url.path})"
        error = cls(message, code="unknown_url" if exc.status_code == 404 else None)
        error.status_code = exc.status_code
        return error_response(error, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        original = unwrap_remote(exc)
        if isinstance(original, ForgeError):
            return error_response(original, request.url.path)
        log.exception("unhandled error")
        error = ForgeError("The platform hit an internal error; it has been logged.")
        return error_response(error, request.url.path)


T = TypeVar("T")
STORAGE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError)


async def unavailable_on(
    call: Awaitable[T], what: str, errors: tuple[type[BaseException], ...] = STORAGE_ERRORS
) -> T:
    """``call``'s answer; its database or storage (or whatever ``errors`` name) failing
    is a 503 with ``Retry-After`` ("``what`` are unavailable right now"), not a 500."""
    try:
        return await call
    except errors as exc:
        log.warning("%s: %s: %s", what, type(exc).__name__, exc)
        raise ServiceUnavailable(f"{what} are unavailable right now.", retry_after=1) from None
