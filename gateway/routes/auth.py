"""People's logins (our paths; OpenAI has none): registration and email verification,
login and logout with a session cookie, sessions listed and revoked, password reset by
a mailed single-use link, password change, a TOTP second factor with recovery codes, and
single sign-on (OpenID Connect's callback; SAML's metadata and assertion consumer).
A signed-in person uses the Admin API with the session cookie (and ``X-CSRF-Token``) as
their user in the session's organisation: gateway.deps.admin."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from forge.errors import NotFound
from forge.identity.export import export_account
from forge.identity.objects import (
    AccountObject,
    CodeBody,
    EraseBody,
    LoginBody,
    LoginObject,
    PasswordChangeBody,
    RecoveryCodes,
    RegisterBody,
    ResetBody,
    ResetConfirmBody,
    SessionObject,
    TokenBody,
    TotpEnrolment,
)
from forge.identity.oidc import refused
from forge.identity.saml import MAX_RESPONSE_BYTES
from forge.identity.service import LiveSession, csrf_token, session_object
from forge.identity.sso import Finished, SingleSignOn
from gateway.runtime import GatewayRuntime
from gateway.sessions import (
    SSO_COOKIE,
    clear_session_cookies,
    clear_sso_cookie,
    client_of,
    identity_of,
    set_session_cookies,
    set_sso_cookie,
    signed_in,
)

router = APIRouter(prefix="/auth", tags=["auth"])
PENDING = {
    "object": "auth.pending",
    "message": "If the email can be used, a mail with a link is on its way.",
}


@router.post("/register", status_code=202)
async def register(body: RegisterBody, request: Request) -> dict[str, Any]:
    """The same answer whether or not the email has an account (its owner is mailed)."""
    await identity_of(request).register(body.email, body.password)
    return PENDING


@router.post("/verify", response_model=AccountObject)
async def verify(body: TokenBody, request: Request) -> AccountObject:
    return await identity_of(request).verify_email(body.token)


@router.post("/login", response_model=LoginObject)
async def login(body: LoginBody, request: Request) -> JSONResponse:
    identity = identity_of(request)
    signed = await identity.login(
        body.email,
        body.password,
        client_of(request),
        body.organization,
        body.totp_code,
        body.recovery_code,
    )
    answer = LoginObject(
        account=await identity.account_object(signed.account),
        session=session_object(signed.session, current=True),
        csrf_token=csrf_token(signed.token),
    )
    response = JSONResponse(answer.model_dump())
    config = identity.config
    set_session_cookies(response, signed.token, int(config.session_ttl_s), config.cookie_secure)
    return response


@router.post("/logout")
async def logout(request: Request, live: LiveSession = Depends(signed_in)) -> JSONResponse:
    identity = identity_of(request)
    await identity.logout(live.session, client_of(request))
    response = JSONResponse({"object": "auth.logout", "session": live.session.id})
    clear_session_cookies(response, identity.config.cookie_secure)
    return response


@router.get("/me", response_model=AccountObject)
async def me(request: Request, live: LiveSession = Depends(signed_in)) -> AccountObject:
    return await identity_of(request).account_object(live.account)


@router.get("/sessions")
async def sessions(request: Request, live: LiveSession = Depends(signed_in)) -> dict[str, Any]:
    found: list[SessionObject] = await identity_of(request).sessions(
        live.account.id, live.session.id
    )
    return {"object": "list", "data": [s.model_dump() for s in found], "has_more": False}


@router.delete("/sessions/{session_id}")
async def revoke_session(
    session_id: str, request: Request, live: LiveSession = Depends(signed_in)
) -> dict[str, Any]:
    await identity_of(request).revoke(live.account.id, session_id, client_of(request))
    return {"object": "auth.session.deleted", "id": session_id, "deleted": True}


@router.post("/sessions/revoke_all")
async def revoke_all(
    request: Request, response: Response, live: LiveSession = Depends(signed_in)
) -> dict[str, Any]:
    """Every session of the account ends, this one too."""
    identity = identity_of(request)
    count = await identity.revoke_all(live.account.id, client_of(request))
    clear_session_cookies(response, identity.config.cookie_secure)
    return {"object": "auth.sessions.revoked", "revoked": count}


@router.post("/password/reset", status_code=202)
async def request_reset(body: ResetBody, request: Request) -> dict[str, Any]:
    await identity_of(request).request_reset(body.email)
    return PENDING


@router.post("/password/reset/confirm")
async def confirm_reset(body: ResetConfirmBody, request: Request) -> dict[str, Any]:
    """A used, expired or unknown link is a 400; every session of the account ends."""
    await identity_of(request).reset_password(body.token, body.password, client_of(request))
    return {"object": "auth.password_reset", "status": "done"}


@router.post("/password")
async def change_password(
    body: PasswordChangeBody, request: Request, live: LiveSession = Depends(signed_in)
) -> dict[str, Any]:
    await identity_of(request).change_password(
        live.session, body.current_password, body.new_password, client_of(request)
    )
    return {"object": "auth.password_changed", "status": "done"}


@router.post("/mfa/totp", response_model=TotpEnrolment)
async def begin_totp(request: Request, live: LiveSession = Depends(signed_in)) -> TotpEnrolment:
    secret, uri = await identity_of(request).begin_totp(live.account.id)
    return TotpEnrolment(secret=secret, otpauth_uri=uri)


@router.post("/mfa/totp/confirm", response_model=RecoveryCodes)
async def confirm_totp(
    body: CodeBody, request: Request, live: LiveSession = Depends(signed_in)
) -> RecoveryCodes:
    codes = await identity_of(request).confirm_totp(
        live.account.id, body.code, client_of(request), live.session.id
    )
    return RecoveryCodes(codes=codes)


@router.post("/mfa/totp/disable")
async def disable_totp(
    body: CodeBody, request: Request, live: LiveSession = Depends(signed_in)
) -> dict[str, Any]:
    await identity_of(request).disable_totp(live.account.id, body.code, client_of(request))
    return {"object": "auth.mfa", "mfa_enabled": False}


def _sso(request: Request) -> SingleSignOn:
    rt: GatewayRuntime = request.app.state.runtime
    if rt.sso is None:
        raise NotFound("Single sign-on is not enabled on this platform.")
    return rt.sso


@router.get("/sso/start")
async def sso_start(
    request: Request,
    email: str = Query(min_length=3, max_length=320),
    return_to: str | None = Query(None, max_length=2000),
) -> RedirectResponse:
    """To the identity provider of the email's organisation (``return_to``: a path on
    this platform to land on afterwards; anything else is a 400)."""
    sso = _sso(request)
    started = await sso.start(email, return_to)
    response = RedirectResponse(started.url, status_code=303)
    set_sso_cookie(response, started.browser, sso.identity.config.cookie_secure)
    return response


@router.get("/sso/callback")
async def sso_callback(
    request: Request,
    code: str | None = Query(None, max_length=2000),
    state: str | None = Query(None, max_length=200),
    error: str | None = Query(None, max_length=200),
) -> RedirectResponse:
    """The provider's answer: a session and a redirect to where the sign-in started, or
    a 401 naming the check that failed (in the audit log too)."""
    sso = _sso(request)
    if error is not None or not code or not state:
        reason = "provider_error" if error is not None else "missing_code_or_state"
        await sso.identity.audit_sso_refusal(None, reason, client_of(request))
        raise refused(reason)
    done = await sso.finish(code, state, request.cookies.get(SSO_COOKIE), client_of(request))
    return _signed_in(sso, done)


@router.get("/saml/metadata")
async def saml_metadata(request: Request) -> Response:
    """This platform's SAML service provider metadata (its entity ID is this URL)."""
    return Response(_sso(request).saml.metadata(), media_type="application/samlmetadata+xml")


@router.post("/saml/acs")
async def saml_acs(
    request: Request,
    saml_response: str | None = Form(None, alias="SAMLResponse", max_length=MAX_RESPONSE_BYTES),
    relay_state: str | None = Form(None, alias="RelayState", max_length=200),
) -> RedirectResponse:
    """The identity provider's Response (HTTP-POST binding): a session and a redirect,
    or a 401 naming the check that failed (unsigned, replayed, another audience...)."""
    sso = _sso(request)
    if not saml_response or not relay_state:
        await sso.identity.audit_sso_refusal(None, "missing_response_or_state", client_of(request))
        raise refused("missing_response_or_state")
    browser = request.cookies.get(SSO_COOKIE)
    done = await sso.finish_saml(saml_response, relay_state, browser, client_of(request))
    return _signed_in(sso, done)


def _signed_in(sso: SingleSignOn, done: Finished) -> RedirectResponse:
    response = RedirectResponse(done.return_to, status_code=303)
    config = sso.identity.config
    set_session_cookies(
        response, done.signed.token, int(config.session_ttl_s), config.cookie_secure
    )
    clear_sso_cookie(response, config.cookie_secure)
    return response


@router.get("/export")
async def export(request: Request, live: LiveSession = Depends(signed_in)) -> Response:
    """Everything the platform holds about the signed-in person, as a zip (GDPR)."""
    identity = identity_of(request)
    archive = await export_account(identity.database, live.account)
    await identity.audit_export(live.account, client_of(request))
    return Response(
        archive,
        media_type="application/zip",
        headers={"content-disposition": 'attachment; filename="promptforge-export.zip"'},
    )


@router.post("/account/delete")
async def erase_account(
    body: EraseBody, request: Request, live: LiveSession = Depends(signed_in)
) -> JSONResponse:
    """Erasure (GDPR article 17): the signed-in person and their data go; the audit log
    keeps its entries, with their personal values as ``"[erased]"``."""
    rt: GatewayRuntime = request.app.state.runtime
    identity = identity_of(request)
    if rt.people is None:
        raise NotFound("Erasure needs the platform's people store.")
    answer, revoked = await identity.erase(live, body.password, client_of(request), rt.people)
    if revoked:
        await rt.keys_changed(revoked)
    response = JSONResponse(answer)
    clear_session_cookies(response, identity.config.cookie_secure)
    return response
