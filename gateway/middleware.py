"""Request ids and the platform-overhead header on every response, as a bare ASGI
wrapper (cheaper per request than Starlette's BaseHTTPMiddleware)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forge.errors import ForgeError, InvalidRequest, ServiceUnavailable
from gateway.drain import SHUTTING_DOWN, Drain
from gateway.errors import error_response
from gateway.request_ids import (
    CLIENT_REQUEST_ID,
    CLIENT_REQUEST_ID_MAX,
    REQUEST_ID,
    outer_ids_installed,
    split_ids,
    valid_client_request_id,
)

log = logging.getLogger(__name__)
OVERHEAD = b"x-forge-overhead-ms"


class RequestContextMiddleware:
    """Stamps ``scope["state"]`` with the platform's request id, the client's own id and a
    start time; adds ``x-request-id``, ``x-client-request-id`` and ``x-forge-overhead-ms``.

    Handlers that wait on a provider set ``x-forge-overhead-ms`` themselves (their time
    minus the provider's); for every other response the whole time is overhead.

    Behind Ray Serve (``behind_serve``) the platform id was already put in place by
    ``PlatformRequestIds`` outside Serve's own middleware, which echoes it as
    ``x-request-id``; elsewhere this middleware makes the id and echoes it itself.
    """

    def __init__(
        self, app: ASGIApp, behind_serve: bool = False, drain: Drain | None = None
    ) -> None:
        self.app = app
        self._behind_serve = behind_serve
        self._drain = drain or Drain()
        self._warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers = scope["headers"]
        if not (self._behind_serve and outer_ids_installed()):
            if self._behind_serve and not self._warned:
                self._warned = True
                log.warning("PlatformRequestIds is not installed: Serve echoes client ids")
            headers, _ = split_ids(list(headers))
            scope["headers"] = headers
        request_id, client_id = "", b""
        for name, value in headers:
            if name == REQUEST_ID:
                request_id = value.decode()
            elif name == CLIENT_REQUEST_ID:
                client_id = value
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["t0"] = t0
        if client_id and not valid_client_request_id(client_id):
            error = InvalidRequest(
                "The client request id (X-Client-Request-Id, or the x-request-id you sent) "
                f"must be 1 to {CLIENT_REQUEST_ID_MAX} printable ASCII characters.",
                param="X-Client-Request-Id",
                code="invalid_client_request_id",
            )
            state["client_request_id"] = None
            await self._refuse(error, scope, receive, send)
            return
        state["client_request_id"] = client_id.decode() if client_id else None
        drain = self._drain
        if drain.draining and not scope.get("path", "").startswith("/health"):
            await self._refuse(
                ServiceUnavailable(
                    "This replica is shutting down; retry shortly.",
                    retry_after=1,
                    code=SHUTTING_DOWN,
                ),
                scope,
                receive,
                send,
            )
            return
        after_response: list[Callable[[], None]] = []
        state["after_response"] = after_response
        emit_id = not self._behind_serve

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = list(message.get("headers", ()))
                names = {name for name, _ in out}
                if emit_id and REQUEST_ID not in names:
                    out.append((REQUEST_ID, request_id.encode()))
                if client_id:
                    out.append((CLIENT_REQUEST_ID, client_id))
                if OVERHEAD not in names:
                    elapsed = (time.perf_counter() - t0) * 1000
                    out.append((OVERHEAD, f"{elapsed:.2f}".encode()))
                message["headers"] = out
            await send(message)

        drain.in_flight += 1
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            drain.in_flight -= 1
            for settle in after_response:  # usage records of answered calls
                try:
                    settle()
                except Exception:
                    log.exception("settling a request's usage failed")

    async def _refuse(self, error: ForgeError, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``error`` without running the app (the id is still echoed)."""
        emit_id = not self._behind_serve
        request_id = scope["state"]["request_id"].encode()

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start" and emit_id:
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID, request_id)]
            await send(message)

        await error_response(error, scope.get("path", ""))(scope, receive, with_id)
