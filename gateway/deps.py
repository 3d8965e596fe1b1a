"""FastAPI dependencies: the replica's runtime and the caller's verified key."""

from __future__ import annotations

from fastapi import Request

from forge.errors import AuthenticationFailed, PermissionDenied
from forge.key_scope import check_endpoint
from forge.keys import KeyInfo
from gateway.auth import presented_key, require_admin, require_platform
from gateway.permissions import check_route_permission
from gateway.runtime import GatewayRuntime
from gateway.sessions import has_session_cookie, session_key


async def runtime(request: Request) -> GatewayRuntime:
    # async on purpose: FastAPI runs a sync dependency in a thread pool, a thread hop
    # per request that showed up as ~4% of the gateway's CPU in profiles.
    return request.app.state.runtime


async def caller(request: Request) -> KeyInfo:
    """The verified key (kept on the request for the audit log); a refused key is an
    auth event in the audit log (sampled: gateway.audit.AuthFailures)."""
    rt: GatewayRuntime = request.app.state.runtime
    try:
        key = await rt.verifier.verify(presented_key(request))
    except (AuthenticationFailed, PermissionDenied) as exc:
        if rt.audit is not None:
            await rt.auth_failures.record(rt.audit, request, exc)
        raise
    request.state.caller = key
    if key.allowed_endpoints is not None:
        route = request.scope.get("route")
        check_endpoint(key.id, key.allowed_endpoints, getattr(route, "path", request.url.path))
    return key


async def admin(request: Request) -> KeyInfo:
    """An admin key allowed this route (gateway.permissions); or, with no key, a
    person's browser session, as their user (gateway.sessions)."""
    if presented_key(request) is None and has_session_cookie(request):
        key = await session_key(request)
        request.state.caller = key
    else:
        key = await caller(request)
    key = require_admin(key)
    await check_route_permission(request, key)
    return key


async def operator(request: Request) -> KeyInfo:
    return require_platform(await caller(request))
