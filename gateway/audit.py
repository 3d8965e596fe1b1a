"""Every admin action goes into the audit log, declared once at its route.

A mutating admin route names its OpenAI event type (``audited("project.created")``);
``AuditedRoute`` (the admin routers' route class) appends one entry after the handler:
who (the caller's key), what (the type, the target's id, the request's fields, never a
secret), where (organisation, project), from which address, and the result, refusals
included (a 403 for raising one's own limits is in the log as much as a 200). A caller
without a valid key leaves an auth event instead (``record_auth_failure``), at most one
per address and reason a minute per replica, so a flood of bad keys cannot flood the
log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from forge.audit.store import AuditEvent, AuditStore, audit_details
from forge.errors import ForgeError
from forge.keys import KeyInfo
from forge.webhooks.events import Event

log = logging.getLogger(__name__)
AUDIT_EVENT = "x-audit-event"
SECRET_FIELDS = frozenset(
    {"api_key", "key", "secret", "password", "token", "credential", "credentials", "value"}
)
AUTH_SAMPLE_S = 60.0
MAX_SAMPLED = 10_000


def audited(event: str) -> dict[str, Any]:
    """``openapi_extra`` of a route whose calls are audited as ``event``."""
    return {AUDIT_EVENT: event}


def actor_of(key: KeyInfo | None) -> dict[str, Any] | None:
    """OpenAI's actor object for a caller's key."""
    if key is None:
        return None
    api_key: dict[str, Any] = {"id": key.id, "type": "user"}
    if key.owner_type == "service_account" and key.owner_id:
        api_key = {**api_key, "type": "service_account", "service_account": {"id": key.owner_id}}
    elif key.owner_type == "user" and key.owner_id:
        api_key = {**api_key, "user": {"id": key.owner_id}}
    return {"type": "api_key", "api_key": api_key}


def redacted(body: Any) -> Any:
    if isinstance(body, dict):
        return {
            k: "[redacted]" if k.lower() in SECRET_FIELDS else redacted(v) for k, v in body.items()
        }
    if isinstance(body, list):
        return [redacted(v) for v in body]
    return body


def _request_fields(request: Request) -> dict[str, Any] | None:
    body = getattr(request.state, "json_body", None)
    if body is None:
        raw = getattr(request, "_body", None)
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return None
    if not isinstance(body, dict):
        return None
    return {k: v for k, v in redacted(body).items() if v is not None}


def _target(request: Request, response: Response | None) -> str | None:
    """The last id in the path, else the id of what the response created."""
    params = list(request.path_params.values())
    if params:
        return str(params[-1])
    if response is None or not isinstance(getattr(response, "body", None), bytes):
        return None
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None
    for holder in (body, body.get("info"), body.get("organization")):
        if isinstance(holder, dict) and isinstance(holder.get("id"), str):
            return str(holder["id"])
    return None


# Audited actions that are also webhook events (forge.webhooks.events).
WEBHOOK_EVENTS = frozenset({"api_key.created", "api_key.deleted"})


async def record(
    request: Request,
    event: str,
    route: str,
    response: Response | None,
    error: BaseException | None,
) -> None:
    audit: AuditStore | None = getattr(request.app.state.runtime, "audit", None)
    key: KeyInfo | None = getattr(request.state, "caller", None)
    if audit is None or key is None:  # unauthenticated: an auth event, not an action
        return
    if error is None and response is not None:
        result: dict[str, Any] = {"status": response.status_code}
    elif isinstance(error, ForgeError):
        result = {"status": error.status_code, "error_code": error.code}
    else:
        result = {"status": 500, "error_code": type(error).__name__}
    result["request_id"] = getattr(request.state, "request_id", None)
    org = getattr(request.state, "org_id", key.org_id)
    if error is None:
        target = _target(request, response)
        project = request.path_params.get("project_id")
        org = request.path_params.get("org_id") or org
        details = audit_details(event, target, _request_fields(request))
    else:  # the ids a refused caller named may be another organisation's: not repeated
        project, details = None, {"route": f"{request.method} {route}"}
    entry = AuditEvent(
        type=event,
        org_id=org,
        project_id=str(project) if project else None,
        actor=actor_of(key),
        actor_id=key.id,
        details=details,
        source_ip=request.client.host if request.client else None,
        result=result,
    )
    try:
        await audit.append(entry)
    except Exception as exc:  # the action is done; say loudly that its entry is missing
        log.error("audit entry for %s %s not written: %s", event, target, type(exc).__name__)
    if error is None and event in WEBHOOK_EVENTS:
        data = {"id": target, "actor": key.id, "project_id": entry.project_id}
        when = datetime.now(UTC)
        await request.app.state.runtime.emit_webhook(
            org, Event(type=event, timestamp=when, data=data)
        )


def _event(request: Request, declared: str) -> str:
    """The declared event, or the one the handler named for what it did (a budget's
    event depends on whose budget it is)."""
    named = getattr(request.state, "audit_event", None)
    return named if isinstance(named, str) else declared


class AuditedRoute(APIRoute):
    """The admin routers' route class: audits the routes that declare an event."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        event = (self.openapi_extra or {}).get(AUDIT_EVENT)
        if event is None:
            return handler

        async def audited_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:
                await record(request, _event(request, event), self.path, None, exc)
                raise
            await record(request, _event(request, event), self.path, response, None)
            return response

        return audited_handler


class AuthFailures:
    """Auth failures as ``login.failed`` entries, sampled per (address, reason)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._last: dict[tuple[str, str], float] = {}
        self._clock = clock
        self.suppressed = 0

    def due(self, address: str, reason: str) -> bool:
        now = self._clock()
        last = self._last.get((address, reason))
        if last is not None and now - last < AUTH_SAMPLE_S:
            self.suppressed += 1
            return False
        if len(self._last) >= MAX_SAMPLED:
            self._last.clear()
        self._last[address, reason] = now
        return True

    async def record(self, audit: AuditStore, request: Request, error: ForgeError) -> None:
        address = request.client.host if request.client else "unknown"
        if not self.due(address, error.code or "unknown"):
            return
        entry = AuditEvent(
            type="login.failed",
            org_id=None,
            details={"error_code": error.code, "error_message": error.message},
            source_ip=address,
            result={"status": error.status_code, "path": request.url.path},
        )
        try:
            await audit.append(entry)
        except Exception as exc:
            log.error("audit entry for a failed login not written: %s", type(exc).__name__)
