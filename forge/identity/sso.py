"""Single sign-on with an organisation's OpenID provider: its connection (issuer, client,
email domains, groups to roles, enforced or not), the sign-in's start (a redirect with
``state``, ``nonce`` and a PKCE challenge, the three kept server-side and used once) and
its callback (the code exchanged, the ID token checked, the person provisioned just in
time into the organisation with the role their groups give, and a session).

SAML 2.0 connections take the same path with other messages (``saml.py``): the start is
an AuthnRequest (its ID kept as the "nonce", the RelayState as the "state"), the callback
is the Response posted to our assertion consumer service.

A connection is found by the email's domain (each domain belongs to one connection), so
a person types their email and is sent to their company's provider."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.credentials.sealing import Keyring
from forge.db.schema import Account, SsoConnection, SsoState, User, as_utc, utcnow
from forge.errors import Conflict, InvalidRequest, NotFound
from forge.identity.objects import EMAIL, Body
from forge.identity.oidc import OidcProvider, SsoRefused, refused
from forge.identity.saml import MAX_RESPONSE_BYTES, ServiceProvider
from forge.identity.service import Client, Identity, SignedIn, new_account, normal_email
from forge.tenancy.objects import unix

OrgRole = Literal["owner", "reader"]
STATE_TTL = timedelta(minutes=10)
SECRET_CONTEXT = "sso-client-secret:{id}"
VERIFIER_CONTEXT = "sso-verifier"
DOMAIN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"


class _Connection(Body):
    email_domains: list[str] = Field(min_length=1, max_length=50)
    group_roles: dict[str, OrgRole] = Field(
        default_factory=dict, description="An IdP group → the organisation role it gives."
    )
    default_role: OrgRole = "reader"
    enforced: bool = Field(False, description="Refuse local passwords for the members.")
    break_glass_email: str | None = Field(
        None, pattern=EMAIL, max_length=320, description="The owner who may still use one."
    )

    @field_validator("email_domains")
    @classmethod
    def _domains(cls, domains: list[str]) -> list[str]:
        import re

        lowered = [d.strip().lower() for d in domains]
        bad = [d for d in lowered if not re.match(DOMAIN, d)]
        if bad:
            raise ValueError(f"not a domain: {bad[0]!r}")
        return lowered


class OidcConnectionBody(_Connection):
    kind: Literal["oidc"] = "oidc"
    issuer: str = Field(min_length=8, max_length=500, pattern=r"^https?://[^\s]+$")
    client_id: str = Field(min_length=1, max_length=300)
    client_secret: str = Field(min_length=1, max_length=2000)


class SamlConnectionBody(_Connection):
    kind: Literal["saml"]
    idp_metadata: str = Field(
        min_length=100,
        max_length=MAX_RESPONSE_BYTES,
        description="The identity provider's SAML metadata XML (one IdPSSODescriptor).",
    )


def _kind(body: Any) -> str:
    found = body.get("kind", "oidc") if isinstance(body, dict) else getattr(body, "kind", "")
    return str(found)


ConnectionBody = Annotated[
    Annotated[OidcConnectionBody, Tag("oidc")] | Annotated[SamlConnectionBody, Tag("saml")],
    Discriminator(_kind),
]


class ConnectionObject(BaseModel):
    id: str
    object: Literal["organization.sso_connection"] = "organization.sso_connection"
    kind: str
    issuer: str = Field(description="OIDC: the issuer; SAML: the IdP's entity ID.")
    client_id: str | None
    email_domains: list[str]
    group_roles: dict[str, str]
    default_role: str
    enforced: bool
    break_glass_email: str | None
    redirect_uri: str = Field(
        description="Register this at the identity provider (SAML: the ACS URL)."
    )
    sp_entity_id: str | None = Field(None, description="SAML: our entity ID (metadata URL).")
    created_at: int


@dataclass
class Started:
    url: str
    browser: str  # for the starting browser's cookie


@dataclass
class Finished:
    signed: SignedIn
    return_to: str


def safe_return(path: str | None) -> str:
    """Where to go after signing in: a path on this platform only (no open redirect)."""
    if path is None or path == "":
        return "/"
    if (
        not path.startswith("/")
        or path.startswith("//")
        or path.startswith("/\\")
        or any(c in path for c in "\r\n\t")
    ):
        raise InvalidRequest(
            "return_to must be a path on this platform (like /console).",
            param="return_to",
            code="invalid_return_to",
        )
    return path


class SingleSignOn:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        identity: Identity,
        keyring: Keyring,
        provider: OidcProvider | None = None,
    ) -> None:
        self._sessions = sessions
        self.identity = identity
        self.keyring = keyring
        self.provider = provider or OidcProvider()
        self.saml = ServiceProvider(identity.config.public_url)

    @property
    def redirect_uri(self) -> str:
        return self.identity.config.public_url.rstrip("/") + "/auth/sso/callback"

    # -- connections ----------------------------------------------------------------------

    async def create(
        self, org_id: str, body: OidcConnectionBody | SamlConnectionBody
    ) -> ConnectionObject:
        connection_id = "ssoc_" + secrets.token_hex(12)
        if isinstance(body, SamlConnectionBody):
            issuer = await asyncio.to_thread(self.saml.import_idp, body.idp_metadata)
            client_id, secret, metadata = "", "", body.idp_metadata
        else:
            issuer, client_id, metadata = body.issuer, body.client_id, None
            secret = self.keyring.seal(body.client_secret, SECRET_CONTEXT.format(id=connection_id))
        async with self._sessions.begin() as s:
            taken = {
                d: c.org_id
                for c in await s.scalars(select(SsoConnection))
                for d in json.loads(c.email_domains)
            }
            clash = [d for d in body.email_domains if d in taken]
            if clash:
                raise Conflict(
                    f"The domain {clash[0]} already signs in through another connection.",
                    param="email_domains",
                    code="domain_taken",
                )
            row = SsoConnection(
                id=connection_id,
                org_id=org_id,
                kind=body.kind,
                issuer=issuer,
                client_id=client_id,
                client_secret=secret,
                idp_metadata=metadata,
                email_domains=json.dumps(body.email_domains),
                group_roles=json.dumps(body.group_roles),
                default_role=body.default_role,
                enforced=body.enforced,
                break_glass_email=normal_email(body.break_glass_email)
                if body.break_glass_email
                else None,
                created_at=utcnow(),
            )
            s.add(row)
        return self._object(row)

    async def list(self, org_id: str) -> list[ConnectionObject]:
        async with self._sessions() as s:
            rows = await s.scalars(
                select(SsoConnection)
                .where(SsoConnection.org_id == org_id)
                .order_by(SsoConnection.created_at)
            )
            return [self._object(r) for r in rows]

    async def delete(self, org_id: str, connection_id: str) -> None:
        async with self._sessions.begin() as s:
            row = await s.get(SsoConnection, connection_id)
            if row is None or row.org_id != org_id:
                raise NotFound(f"No SSO connection {connection_id!r}.", param="connection_id")
            await s.delete(row)

    def _object(self, row: SsoConnection) -> ConnectionObject:
        return ConnectionObject(
            id=row.id,
            kind=row.kind,
            issuer=row.issuer,
            client_id=row.client_id or None,
            email_domains=json.loads(row.email_domains),
            group_roles=json.loads(row.group_roles),
            default_role=row.default_role,
            enforced=row.enforced,
            break_glass_email=row.break_glass_email,
            redirect_uri=self.saml.acs_url if row.kind == "saml" else self.redirect_uri,
            sp_entity_id=self.saml.entity_id if row.kind == "saml" else None,
            created_at=unix(row.created_at) or 0,
        )

    async def for_email(self, email: str) -> SsoConnection | None:
        domain = normal_email(email).rpartition("@")[2]
        async with self._sessions() as s:
            for row in await s.scalars(select(SsoConnection)):
                if domain in json.loads(row.email_domains):
                    return row
        return None

    # -- signing in -----------------------------------------------------------------------

    async def start(self, email: str, return_to: str | None) -> Started:
        """The provider's authorization URL for ``email``'s organisation, and the secret
        the starting browser keeps (a cookie): the callback must come from it."""
        back = safe_return(return_to)
        connection = await self.for_email(email)
        if connection is None:
            raise NotFound("No single sign-on for this email's domain.", param="email")
        state, browser = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        if connection.kind == "saml":
            request_id, url = await asyncio.to_thread(
                self.saml.authn_request, connection.idp_metadata or "", connection.issuer, state
            )
            await self._keep_state(state, browser, connection, request_id, "", back)
            return Started(url, browser)
        metadata = await self.provider.metadata(connection.issuer)
        nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        sealed = self.keyring.seal(verifier, VERIFIER_CONTEXT)
        await self._keep_state(state, browser, connection, nonce, sealed, back)
        url = self.provider.authorization_url(
            metadata, connection.client_id, self.redirect_uri, state, nonce, verifier
        )
        return Started(url, browser)

    async def _keep_state(
        self,
        state: str,
        browser: str,
        connection: SsoConnection,
        nonce: str,
        verifier: str,
        back: str,
    ) -> None:
        async with self._sessions.begin() as s:
            s.add(
                SsoState(
                    state_hash=_digest(state),
                    connection_id=connection.id,
                    nonce=nonce,
                    verifier=verifier,
                    return_to=back,
                    created_at=utcnow(),
                    expires_at=utcnow() + STATE_TTL,
                    browser_hash=_digest(browser),
                )
            )

    async def finish(self, code: str, state: str, browser: str | None, client: Client) -> Finished:
        """The OpenID callback: every check, then the person's session (``SsoRefused``,
        a 401 with its reason in the audit log, otherwise)."""

        async def claims(connection: SsoConnection, pending: SsoState) -> dict[str, Any]:
            return await self._claims(connection, pending, code)

        return await self._finish("oidc", state, browser, client, claims)

    async def finish_saml(
        self, saml_response: str, relay_state: str, browser: str | None, client: Client
    ) -> Finished:
        """The Response posted to our ACS: signed, for us, answering our request."""

        async def claims(connection: SsoConnection, pending: SsoState) -> dict[str, Any]:
            accepted = await asyncio.to_thread(
                self.saml.accepted,
                connection.idp_metadata or "",
                connection.issuer,
                saml_response,
                pending.nonce,
            )
            return accepted.claims()

        return await self._finish("saml", relay_state, browser, client, claims)

    async def _finish(
        self,
        kind: str,
        state: str,
        browser: str | None,
        client: Client,
        claims_of: Callable[[SsoConnection, SsoState], Awaitable[dict[str, Any]]],
    ) -> Finished:
        connection: SsoConnection | None = None
        try:
            pending = await self._take_state(state)
            # a sign-in another browser started (an attacker's own, posted by a page the
            # victim opened, would sign the victim into the attacker's account)
            if not hmac.compare_digest(_digest(browser or ""), pending.browser_hash):
                raise refused("browser_mismatch")
            async with self._sessions() as s:
                connection = await s.get(SsoConnection, pending.connection_id)
            if connection is None:
                raise refused("connection_removed")
            if connection.kind != kind:
                raise refused("wrong_protocol")
            claims = await claims_of(connection, pending)
            email = _verified_email(claims, connection)
            signed = await self._sign_in(connection, claims, email, client)
        except SsoRefused as failed:
            org = connection.org_id if connection is not None else None
            await self.identity.audit_sso_refusal(org, failed.reason, client)
            raise
        return Finished(signed, pending.return_to)

    async def _take_state(self, state: str) -> SsoState:
        """The pending sign-in, used up: a conditional update, so that of two callbacks
        with the same state at once only one gets it (SQLite has no row locks)."""
        key = _digest(state)
        async with self._sessions.begin() as s:
            row = await s.get(SsoState, key)
            if row is None:
                raise refused("invalid_state")
            if row.used_at is not None:
                raise refused("replayed_state")
            if as_utc(row.expires_at) <= utcnow():
                raise refused("expired_state")
            taken = await s.execute(
                update(SsoState)
                .where(SsoState.state_hash == key, SsoState.used_at.is_(None))
                .values(used_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise refused("replayed_state")
            s.expunge(row)
            return row

    async def _claims(
        self, connection: SsoConnection, pending: SsoState, code: str
    ) -> dict[str, Any]:
        metadata = await self.provider.metadata(connection.issuer)
        secret = self.keyring.open(
            connection.client_secret, SECRET_CONTEXT.format(id=connection.id)
        )
        verifier = self.keyring.open(pending.verifier, VERIFIER_CONTEXT)
        token = await self.provider.exchange(
            metadata, connection.client_id, secret, self.redirect_uri, code, verifier
        )
        claims = await self.provider.verified_claims(
            metadata, str(token["id_token"]), connection.client_id, pending.nonce
        )
        if token.get("access_token") and not {"email", "groups"} <= claims.keys():
            extra = await self.provider.user_info(
                metadata, str(token["access_token"]), str(claims["sub"])
            )
            claims = {**extra, **claims}  # the signed token's claims win
        return claims

    async def _sign_in(
        self, connection: SsoConnection, claims: dict[str, Any], email: str, client: Client
    ) -> SignedIn:
        """Just in time: the account (no password) and the organisation's user, whose
        role follows the provider's groups at every sign-in."""
        role = role_for(
            claims.get("groups"), json.loads(connection.group_roles), connection.default_role
        )
        now = utcnow()
        async with self._sessions.begin() as s:
            account = await s.scalar(select(Account).where(Account.email == email))
            if account is None:
                account = new_account(email, email_verified_at=now)
                s.add(account)
            account.email_verified_at = account.email_verified_at or now
            user = await s.scalar(
                select(User).where(User.org_id == connection.org_id, User.email == email)
            )
            if user is None:
                name = claims.get("name")
                user = User(
                    id="user-" + secrets.token_hex(12),
                    org_id=connection.org_id,
                    email=email,
                    name=str(name)[:200] if name else None,
                    role=role,
                    created_at=now,
                )
                s.add(user)
            elif not user.active:  # deactivated by provisioning: the provider's word too
                raise refused("user_deactivated")
            else:
                user.role = role
            await s.flush()
            s.expunge_all()
        return await self.identity.open_session(
            account,
            user,
            connection.org_id,
            client,
            {"method": connection.kind, "connection": connection.id},
        )


def role_for(groups: Any, mapping: dict[str, str], default: str) -> str:
    """The highest role any of the person's groups gives (owner above reader), else
    the connection's default."""
    roles = {mapping[g] for g in groups or [] if isinstance(g, str) and g in mapping}
    return "owner" if "owner" in roles else "reader" if "reader" in roles else default


def _verified_email(claims: dict[str, Any], connection: SsoConnection) -> str:
    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") is False:
        raise refused("no_verified_email")
    email = normal_email(email)
    if email.rpartition("@")[2] not in json.loads(connection.email_domains):
        raise refused("domain_not_allowed")
    return email


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
