"""Browser sessions on the gateway: the session cookie, its CSRF check, and the key a
session acts as on the Admin API (the person's user in the session's organisation, with
that user's permissions: gateway.permissions reads them for a key a user owns)."""

from __future__ import annotations

import hmac

from fastapi import Request, Response

from forge.errors import AuthenticationFailed, NotFound, PermissionDenied
from forge.identity.service import Client, Identity, LiveSession, csrf_token
from forge.keys import KeyInfo
from gateway.runtime import GatewayRuntime

SESSION_COOKIE = "forge_session"
CSRF_COOKIE = "forge_csrf"
SSO_COOKIE = "forge_sso"
SSO_COOKIE_TTL_S = 600.0  # as long as a sign-in's state lives (forge.identity.sso)
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def identity_of(request: Request) -> Identity:
    rt: GatewayRuntime = request.app.state.runtime
    if rt.identity is None:
        raise NotFound("People's logins are not enabled on this platform.")
    return rt.identity


def client_of(request: Request) -> Client:
    return Client(
        address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


def has_session_cookie(request: Request) -> bool:
    return SESSION_COOKIE in request.cookies


async def signed_in(request: Request) -> LiveSession:
    """The request's live session (401 without one); a state change must carry the
    session's CSRF token in ``X-CSRF-Token`` (403 without it)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise AuthenticationFailed("Sign in first.", code="not_signed_in")
    live = await identity_of(request).session_of(token)
    if live is None:
        raise AuthenticationFailed("This session has ended: sign in again.", code="session_ended")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf_token(token).encode()):
            raise PermissionDenied(
                f"Missing or wrong {CSRF_HEADER} header for this session.", code="csrf_failed"
            )
    request.state.session = live
    return live


async def session_key(request: Request) -> KeyInfo:
    """What a session is on the Admin API: its user's key, in its organisation."""
    live = await signed_in(request)
    session = live.session
    if session.restricted:
        raise PermissionDenied(
            "Your organisation requires a second factor: enrol one (POST /auth/mfa/totp) "
            "and sign in again.",
            code="mfa_enrollment_required",
        )
    return KeyInfo(
        id=session.id,
        name=f"session of {live.account.email}",
        prefix="sess",
        role="admin",  # the route's permission, checked against the user's, decides
        created_at=session.created_at,
        org_id=session.org_id,
        project_id=live.project_id,
        owner_type="user",
        owner_id=session.user_id,
        org_status=live.org_status,
        plan=live.plan,
    )


def set_session_cookies(response: Response, token: str, max_age: int, secure: bool) -> None:
    """The session (HttpOnly: no script reads it) and its CSRF token (readable by the
    console's own script, which sends it back as a header)."""
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, httponly=True, secure=secure, samesite="lax"
    )
    response.set_cookie(
        CSRF_COOKIE, csrf_token(token), max_age=max_age, secure=secure, samesite="strict"
    )


def set_sso_cookie(response: Response, browser: str, secure: bool) -> None:
    """The secret binding a single sign-on to the browser that started it. SAML's
    Response comes back as a cross-site POST, which only a ``SameSite=None`` cookie
    rides (browsers want it ``Secure``); over plain HTTP (development) ``Lax``, which
    OIDC's top-level redirect still carries."""
    response.set_cookie(
        SSO_COOKIE,
        browser,
        max_age=int(SSO_COOKIE_TTL_S),
        path="/auth",
        httponly=True,
        secure=secure,
        samesite="none" if secure else "lax",
    )


def clear_sso_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(SSO_COOKIE, path="/auth", secure=secure, httponly=True)


def clear_session_cookies(response: Response, secure: bool) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, secure=secure, httponly=name == SESSION_COOKIE)
