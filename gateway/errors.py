"""One place where every failure becomes OpenAI's error shape with the right status."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from forge.errors import ForgeError, InvalidRequest, NotFound, unwrap_remote

log = logging.getLogger(__name__)

_STATUS_TYPES = {404: NotFound, 405: InvalidRequest}


def error_response(error: ForgeError) -> Response:
    return Response(
        orjson.dumps(error.to_body()),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers(),
    )


def param_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """OpenAI's ``param`` spelling of a validation location: ``messages[0].role``."""
    out = ""
    for part in loc:
        if part in ("body",) and not out:
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
    async def _forge(_: Request, exc: ForgeError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        cls = _STATUS_TYPES.get(exc.status_code, InvalidRequest)
        error = cls(str(exc.detail), code="unknown_url" if exc.status_code == 404 else None)
        error.status_code = exc.status_code
        return error_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        original = unwrap_remote(exc)
        if isinstance(original, ForgeError):
            return error_response(original)
        log.exception("unhandled error")
        error = ForgeError("The platform hit an internal error; it has been logged.")
        return error_response(error)
