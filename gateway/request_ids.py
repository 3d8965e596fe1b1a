"""Request ids: the platform's own, and the client's kept beside it.

A usage record is keyed by the request id, so the id must be the platform's: a client
that chose it could make three requests share one record (two of them free), or break
a whole shipment with an id too long for the column. The client's id (OpenAI's
``X-Client-Request-Id``, or an ``x-request-id`` it sent) is kept as a separate,
length-checked field and echoed back as ``x-client-request-id``.

Behind Ray Serve, the replica's HTTP server wraps every app in Serve's own request-id
middleware, which takes the client's ``x-request-id`` as Serve's id and echoes it. So
``PlatformRequestIds`` runs outside it (Serve's ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``
hook, set in ``serve/env.py``): it moves the client's id aside and puts a fresh platform
id in its place, which Serve then uses for its logs and echoes as ``x-request-id``.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

REQUEST_ID = b"x-request-id"
CLIENT_REQUEST_ID = b"x-client-request-id"
CLIENT_REQUEST_ID_MAX = 512  # OpenAI's limit for X-Client-Request-Id
REQUEST_ID_PREFIX = "req_"

_outer_installed = False


def new_request_id() -> str:
    """A fresh platform id: 36 characters, never chosen by a client."""
    return REQUEST_ID_PREFIX + uuid.uuid4().hex


def valid_client_request_id(value: bytes) -> bool:
    """Printable ASCII, at most 512 characters, as OpenAI requires of X-Client-Request-Id."""
    return 0 < len(value) <= CLIENT_REQUEST_ID_MAX and all(32 <= b < 127 for b in value)


def split_ids(headers: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], str]:
    """``headers`` with a fresh platform ``x-request-id`` and the client's own id (its
    ``x-client-request-id``, else the ``x-request-id`` it sent) as ``x-client-request-id``."""
    client_id: bytes | None = None
    sent_request_id: bytes | None = None
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name == REQUEST_ID:
            sent_request_id = sent_request_id or value
        elif name == CLIENT_REQUEST_ID:
            client_id = client_id or value
        else:
            kept.append((name, value))
    request_id = new_request_id()
    kept.append((REQUEST_ID, request_id.encode()))
    client_id = client_id if client_id is not None else sent_request_id
    if client_id is not None:
        kept.append((CLIENT_REQUEST_ID, client_id))
    return kept, request_id


def outer_ids_installed() -> bool:
    """Whether ``PlatformRequestIds`` wraps this process's HTTP server (behind Serve)."""
    return _outer_installed


class PlatformRequestIds:
    """Outermost ASGI middleware behind Serve: the platform's id replaces the client's."""

    def __init__(self, app: ASGIApp) -> None:
        global _outer_installed
        _outer_installed = True
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = dict(scope)
            scope["headers"], _ = split_ids(list(scope.get("headers", ())))
        await self.app(scope, receive, send)


def serve_http_middlewares() -> list[Any]:
    """The hook Serve calls (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``) for the
    middlewares around every HTTP server it starts."""
    from starlette.middleware import Middleware

    return [Middleware(PlatformRequestIds)]
