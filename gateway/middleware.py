"""Request id and platform-overhead headers on every response, as a bare ASGI wrapper
(cheaper per request than Starlette's BaseHTTPMiddleware)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID = b"x-request-id"
OVERHEAD = b"x-forge-overhead-ms"


class RequestContextMiddleware:
    """Stamps ``scope["state"]`` with a request id and a start time; adds both headers.

    Handlers that wait on a provider set ``x-forge-overhead-ms`` themselves (their time
    minus the provider's); for every other response the whole time is overhead.

    Behind Ray Serve the id is Serve's own (``request_id_source``), which Serve already
    returns as ``x-request-id``: logs, usage rows and the client then share one id.
    """

    def __init__(
        self,
        app: ASGIApp,
        request_id_source: Callable[[], str | None] | None = None,
        emit_request_id: bool = True,
    ) -> None:
        self.app = app
        self._source = request_id_source
        self._emit_request_id = emit_request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        request_id = (self._source and self._source()) or "req_" + uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["t0"] = t0

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {name for name, _ in headers}
                if self._emit_request_id and REQUEST_ID not in names:
                    headers.append((REQUEST_ID, request_id.encode()))
                if OVERHEAD not in names:
                    elapsed = (time.perf_counter() - t0) * 1000
                    headers.append((OVERHEAD, f"{elapsed:.2f}".encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
