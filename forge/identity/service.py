"""Accounts and sessions: registration with a verified email, login (password, then the
second factor when enrolled), browser sessions, password reset and change, TOTP with
recovery codes, and the brute-force throttle. Every event is audited.

An account is a person's login, one per email; their memberships are the ``users`` rows
with that email, in each organisation they belong to. A session acts in one of them as
that user, with that user's roles (the Admin API's permission checks do the rest).
Nothing here tells whether an email has an account: registration and reset answer the
same either way (and do the same work), a wrong password for an unknown email takes as
long as for a known one, and the throttle counts per email whether or not it exists.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.audit.store import AuditEvent, AuditStore
from forge.config import AuthConfig
from forge.credentials.sealing import Keyring
from forge.db.schema import (
    Account,
    AuthSession,
    AuthToken,
    Organization,
    SsoConnection,
    User,
    as_utc,
    utcnow,
)
from forge.errors import (
    AuthenticationFailed,
    Conflict,
    ForgeError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from forge.identity import totp
from forge.identity.mailer import Mailer
from forge.identity.objects import AccountObject, Membership, SessionObject
from forge.identity.passwords import check_policy, hash_password, needs_rehash, verify_password
from forge.identity.throttle import LoginThrottleStore, address_key, email_key
from forge.people.permissions import PERMISSIONS
from forge.people.store import PeopleStore
from forge.tenancy.objects import unix

log = logging.getLogger(__name__)
TOTP_CONTEXT = "account-totp:{id}"
TOUCH_EVERY = timedelta(seconds=60)  # a session's last use, written at most this often


class TooManyAttempts(ForgeError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "too_many_login_attempts"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from its secret, so it needs no storage and
    no page of another site can know it."""
    mac = hmac.new(session_token.encode(), b"forge-csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def normal_email(email: str) -> str:
    return email.strip().lower()


@dataclass
class Client:
    """Where a request came from, for the audit log and the throttle."""

    address: str | None = None
    user_agent: str | None = None


@dataclass
class LiveSession:
    """A session in use, with what acting in its organisation needs."""

    session: AuthSession
    account: Account
    org_status: str
    plan: str | None
    project_id: str


@dataclass
class SignedIn:
    token: str  # the cookie's value: shown once, only its digest is kept
    session: AuthSession
    account: Account


class Identity:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        config: AuthConfig,
        keyring: Keyring,
        mailer: Mailer,
        audit: AuditStore | None,
    ) -> None:
        self._sessions = sessions
        self.config = config
        self.keyring = keyring
        self.mailer = mailer
        self.audit = audit
        self.throttle = LoginThrottleStore(sessions, config.login)
        self._mails: set[asyncio.Task[None]] = set()

    # -- registration and mailed tokens ---------------------------------------------------

    async def register(self, email: str, password: str) -> None:
        """A new account, unverified, and a verification mail. The same answer if the
        email has an account: then its owner gets a mail saying so (or, unverified, a
        new link). A password failing the policy is a 400 either way."""
        email = normal_email(email)
        check_policy(password, email, self.config.password_min_length)
        hashed = await asyncio.to_thread(hash_password, password)  # the same work either way
        async with self._sessions.begin() as s:
            account = await s.scalar(select(Account).where(Account.email == email))
            if account is None:
                account = new_account(email, password_hash=hashed, password_changed_at=utcnow())
                s.add(account)
            elif account.email_verified_at is not None:
                self._mail(
                    email,
                    "Someone tried to sign up with your email",
                    "An account with this email already exists. If that was you, sign in, "
                    "or reset your password. If not, you can ignore this mail.",
                )
                return
        link = await self._new_token(account.id, "verify_email", self.config.verify_ttl_s)
        self._mail(
            email,
            "Verify your email",
            f"Open this link to verify your email:\n{self.config.public_url}/auth/verify"
            f"?token={link}\n\nIt works once, for {self.config.verify_ttl_s / 3600:g} hours.",
        )

    async def verify_email(self, token: str) -> AccountObject:
        account_id = await self._use_token(token, "verify_email")
        async with self._sessions.begin() as s:
            account = await s.get(Account, account_id)
            assert account is not None
            account.email_verified_at = account.email_verified_at or utcnow()
        await self._audit_each(account, "account.email_verified", Client(), {})
        return await self.account_object(account)

    async def request_reset(self, email: str) -> None:
        """A reset link to the email's account, if it has one; the same answer if not."""
        email = normal_email(email)
        async with self._sessions() as s:
            account = await s.scalar(select(Account).where(Account.email == email))
        if account is None or account.disabled_at is not None:
            return
        link = await self._new_token(account.id, "reset_password", self.config.reset_ttl_s)
        self._mail(
            email,
            "Reset your password",
            f"Open this link to choose a new password:\n{self.config.public_url}/auth/reset"
            f"?token={link}\n\nIt works once, for {self.config.reset_ttl_s / 60:g} minutes. "
            "If you did not ask for it, ignore this mail: your password stays.",
        )

    async def reset_password(self, token: str, password: str, client: Client) -> None:
        """A new password from a reset link; every session of the account ends, and the
        email's failed logins are forgotten. (A used or expired link: 400.)"""
        async with self._sessions() as s:
            row = await s.get(AuthToken, token_digest(token))
            account = None if row is None else await s.get(Account, row.account_id)
        if account is not None:
            check_policy(password, account.email, self.config.password_min_length)
        account_id = await self._use_token(token, "reset_password")
        hashed = await asyncio.to_thread(hash_password, password)
        async with self._sessions.begin() as s:
            account = await s.get(Account, account_id)
            assert account is not None
            account.password_hash, account.password_changed_at = hashed, utcnow()
            account.email_verified_at = account.email_verified_at or utcnow()  # it got the mail
        await self.revoke_all(account_id)
        await self.throttle.clear([email_key(account.email)])
        await self._audit_each(account, "password.reset", client, {})

    async def _new_token(self, account_id: str, kind: str, ttl_s: float) -> str:
        token = secrets.token_urlsafe(32)
        async with self._sessions.begin() as s:
            s.add(
                AuthToken(
                    token_hash=token_digest(token),
                    kind=kind,
                    account_id=account_id,
                    created_at=utcnow(),
                    expires_at=utcnow() + timedelta(seconds=ttl_s),
                )
            )
        return token

    async def _use_token(self, token: str, kind: str) -> str:
        """The account of an unused, unexpired token of ``kind``, which is now used."""
        async with self._sessions.begin() as s:
            row = await s.get(AuthToken, token_digest(token), with_for_update=True)
            if row is None or row.kind != kind:
                raise InvalidRequest("This link is not valid.", param="token", code="invalid_token")
            if row.used_at is not None:
                raise InvalidRequest(
                    "This link was used already.", param="token", code="token_used"
                )
            if as_utc(row.expires_at) <= utcnow():
                raise InvalidRequest("This link has expired.", param="token", code="token_expired")
            row.used_at = utcnow()
            return row.account_id

    def _mail(self, to: str, subject: str, text: str) -> None:
        """Sent in the background: a caller cannot time whether a mail went."""
        task = asyncio.get_running_loop().create_task(self._send(to, subject, text))
        self._mails.add(task)
        task.add_done_callback(self._mails.discard)

    async def _send(self, to: str, subject: str, text: str) -> None:
        try:
            await self.mailer.send(to, subject, text)
        except Exception as exc:  # the link is lost; asking again sends a new one
            log.warning("identity: a mail could not be sent: %s", type(exc).__name__)

    async def flush(self) -> None:
        """Every mail under way, sent (tests; shutdown)."""
        if self._mails:
            await asyncio.wait(list(self._mails))

    # -- login and sessions ---------------------------------------------------------------

    async def login(
        self,
        email: str,
        password: str,
        client: Client,
        organization: str | None = None,
        totp_code: str | None = None,
        recovery_code: str | None = None,
    ) -> SignedIn:
        email = normal_email(email)
        keys = [email_key(email)]
        if (address := address_key(client.address)) is not None:
            keys.append(address)
        wait = await self.throttle.locked_for(keys)
        if wait > 0:
            await self._audit_failure(email, client, "locked")
            raise TooManyAttempts(
                "Too many failed logins: try again later.", retry_after=int(wait) + 1
            )
        async with self._sessions() as s:
            account = await s.scalar(select(Account).where(Account.email == email))
        stored = None if account is None else account.password_hash
        right = await asyncio.to_thread(verify_password, stored, password)
        if account is None or not right or account.disabled_at is not None:
            await self._refuse(keys, email, client, "invalid_credentials")
            raise AuthenticationFailed("Invalid email or password.", code="invalid_credentials")
        if account.email_verified_at is None:  # the right password: no secret to keep
            raise PermissionDenied(
                "Verify your email first: open the link mailed to you.",
                code="email_not_verified",
            )
        if account.totp_enabled_at is not None:
            await self._second_factor(account, keys, client, totp_code, recovery_code)
        user, org = await self._membership(account, organization)
        await self._check_sso_enforced(org.id, email)
        await self.throttle.clear([email_key(email)])
        if stored is not None and needs_rehash(stored):
            await self._set_password(account.id, password)
        # the organisation requires a second factor this account has not enrolled: a
        # session that may enrol one and do nothing else
        restricted = org.require_mfa and account.totp_enabled_at is None
        details: dict[str, Any] = {"method": "password"}
        if restricted:
            details["mfa_enrollment_required"] = True
        return await self.open_session(account, user, org.id, client, details, restricted)

    async def open_session(
        self,
        account: Account,
        user: User,
        org_id: str,
        client: Client,
        details: dict[str, Any],
        restricted: bool = False,
    ) -> SignedIn:
        """A new session of ``account`` acting as ``user`` (after a password or SSO)."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        session = AuthSession(
            id="sess_" + secrets.token_hex(12),
            token_hash=token_digest(token),
            account_id=account.id,
            org_id=org_id,
            user_id=user.id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=self.config.session_ttl_s),
            source_ip=client.address,
            user_agent=(client.user_agent or "")[:300] or None,
            restricted=restricted,
        )
        async with self._sessions.begin() as s:
            s.add(session)
        await self._audit(
            org_id, user, account, "login.succeeded", client, {"session": session.id, **details}
        )
        return SignedIn(token, session, account)

    async def _check_sso_enforced(self, org_id: str, email: str) -> None:
        """An organisation that made SSO mandatory refuses local passwords (but its
        break-glass owner's)."""
        async with self._sessions() as s:
            enforced = await s.scalar(
                select(SsoConnection).where(
                    SsoConnection.org_id == org_id, SsoConnection.enforced.is_(True)
                )
            )
        if enforced is not None and enforced.break_glass_email != email:
            raise PermissionDenied(
                "This organisation signs in through its identity provider: use single "
                "sign-on (/auth/sso/start).",
                code="sso_required",
            )

    async def audit_sso_refusal(self, org_id: str | None, reason: str, client: Client) -> None:
        """A refused single sign-on, with the check that failed."""
        if self.audit is None:
            return
        self._background(
            self.audit.append(
                AuditEvent(
                    type="login.failed",
                    org_id=org_id,
                    actor={"type": "session", "session": {"ip_address": client.address}},
                    details={"method": "oidc", "reason": reason},
                    source_ip=client.address,
                    result={"status": 401, "code": reason},
                )
            )
        )

    async def _refuse(self, keys: list[str], email: str, client: Client, reason: str) -> None:
        failures = await self.throttle.failed(keys)
        await self._audit_failure(email, client, reason)
        await asyncio.sleep(self.throttle.delay_s(failures))

    async def _second_factor(
        self,
        account: Account,
        keys: list[str],
        client: Client,
        code: str | None,
        recovery: str | None,
    ) -> None:
        if not code and not recovery:
            raise AuthenticationFailed(
                "This account has a second factor: send totp_code (or recovery_code).",
                code="mfa_required",
            )
        if recovery:
            if await self._use_recovery_code(account.id, recovery):
                return
        elif code and await self._use_totp(account, code):
            return
        await self._refuse(keys, account.email, client, "invalid_mfa_code")
        raise AuthenticationFailed("Invalid second-factor code.", code="invalid_mfa_code")

    async def _use_totp(self, account: Account, code: str, *, pending: bool = False) -> bool:
        """Whether ``code`` is good now and unused (its step is then kept: good once)."""
        sealed = account.totp_pending if pending else account.totp_secret
        if sealed is None:
            return False
        secret = self.keyring.open(sealed, TOTP_CONTEXT.format(id=account.id))
        step = totp.matching_step(secret, code, account.totp_last_step)
        if step is None:
            return False
        async with self._sessions.begin() as s:  # one winner if the code races itself
            done = await s.execute(
                update(Account)
                .where(
                    Account.id == account.id,
                    (Account.totp_last_step.is_(None)) | (Account.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    async def _use_recovery_code(self, account_id: str, code: str) -> bool:
        digest = totp.code_digest(code)
        async with self._sessions.begin() as s:
            account = await s.get(Account, account_id, with_for_update=True)
            codes = json.loads(account.recovery_codes or "[]") if account else []
            if account is None or digest not in codes:
                return False
            codes.remove(digest)
            account.recovery_codes = json.dumps(codes)
        return True

    async def _membership(self, account: Account, wanted: str | None) -> tuple[User, Organization]:
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(User, Organization)
                    .join(Organization, Organization.id == User.org_id)
                    .where(
                        User.email == account.email,
                        User.active.is_(True),
                        Organization.status == "active",
                    )
                    .order_by(User.created_at)
                )
            ).all()
        if wanted is not None:
            rows = [r for r in rows if r[1].id == wanted]
        if not rows:
            raise PermissionDenied(
                "This account is not a member of that organisation."
                if wanted
                else "This account is not a member of any organisation yet.",
                code="no_membership",
            )
        if len(rows) > 1:
            raise InvalidRequest(
                "Choose an organisation: " + ", ".join(r[1].id for r in rows),
                param="organization",
                code="organization_required",
            )
        return rows[0][0], rows[0][1]

    async def session_of(self, token: str) -> LiveSession | None:
        """The live session a cookie names (expired, idle, revoked, of a disabled account
        or of a user no longer in the organisation: None), its last use noted."""
        now = utcnow()
        async with self._sessions() as s:
            session = await s.scalar(
                select(AuthSession).where(AuthSession.token_hash == token_digest(token))
            )
            if session is None:
                return None
            account = await s.get(Account, session.account_id)
            user = await s.get(User, session.user_id)
            org = await s.get(Organization, session.org_id)
        if account is None or account.disabled_at is not None or org is None:
            return None
        if user is None or not user.active:  # removed or deactivated (SCIM)
            return None
        idle = timedelta(seconds=self.config.session_idle_s)
        last = as_utc(session.last_seen_at)
        if session.revoked_at is not None or as_utc(session.expires_at) <= now or now - last > idle:
            return None
        if now - last > TOUCH_EVERY:
            async with self._sessions.begin() as s:
                await s.execute(
                    update(AuthSession).where(AuthSession.id == session.id).values(last_seen_at=now)
                )
        return LiveSession(session, account, org.status, org.plan, org.default_project_id)

    async def logout(self, session: AuthSession, client: Client) -> None:
        await self._revoke(session.account_id, [session.id])
        user = await self._user(session.user_id)
        account = await self._account(session.account_id)
        await self._audit(session.org_id, user, account, "logout.succeeded", client, {})

    async def sessions(self, account_id: str, current: str | None) -> list[SessionObject]:
        now = utcnow()
        async with self._sessions() as s:
            rows = await s.scalars(
                select(AuthSession)
                .where(AuthSession.account_id == account_id, AuthSession.revoked_at.is_(None))
                .order_by(AuthSession.created_at.desc())
            )
            live = [r for r in rows if as_utc(r.expires_at) > now]
        return [session_object(r, r.id == current) for r in live]

    async def revoke(self, account_id: str, session_id: str, client: Client) -> None:
        if not await self._revoke(account_id, [session_id]):
            raise NotFound(f"No session {session_id!r}.", param="session_id")
        account = await self._account(account_id)
        await self._audit_each(account, "session.revoked", client, {"id": session_id})

    async def revoke_all(
        self, account_id: str, client: Client | None = None, keep: str | None = None
    ) -> int:
        """Every live session of the account ends (but ``keep``); how many."""
        async with self._sessions() as s:
            ids = list(
                await s.scalars(
                    select(AuthSession.id).where(
                        AuthSession.account_id == account_id, AuthSession.revoked_at.is_(None)
                    )
                )
            )
        ids = [i for i in ids if i != keep]
        count = await self._revoke(account_id, ids)
        if client is not None and count:
            account = await self._account(account_id)
            await self._audit_each(account, "session.revoked", client, {"count": count})
        return count

    async def revoke_user(self, user_id: str) -> int:
        """Every session acting as ``user_id`` ends (a user removed or deactivated)."""
        async with self._sessions.begin() as s:
            done = await s.execute(
                update(AuthSession)
                .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return int(done.rowcount)  # type: ignore[attr-defined]

    async def _revoke(self, account_id: str, ids: list[str]) -> int:
        if not ids:
            return 0
        async with self._sessions.begin() as s:
            done = await s.execute(
                update(AuthSession)
                .where(
                    AuthSession.account_id == account_id,
                    AuthSession.id.in_(ids),
                    AuthSession.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow())
            )
        return int(done.rowcount)  # type: ignore[attr-defined]

    # -- passwords and the second factor --------------------------------------------------

    async def change_password(
        self, session: AuthSession, current: str, new: str, client: Client
    ) -> None:
        """Needs the current password; every other session ends."""
        account = await self._account(session.account_id)
        if not await asyncio.to_thread(verify_password, account.password_hash, current):
            raise InvalidRequest(
                "The current password is not right.",
                param="current_password",
                code="invalid_password",
            )
        check_policy(new, account.email, self.config.password_min_length)
        await self._set_password(account.id, new)
        await self.revoke_all(account.id, keep=session.id)
        await self._audit_each(account, "password.changed", client, {})

    async def _set_password(self, account_id: str, password: str) -> None:
        hashed = await asyncio.to_thread(hash_password, password)
        async with self._sessions.begin() as s:
            await s.execute(
                update(Account)
                .where(Account.id == account_id)
                .values(password_hash=hashed, password_changed_at=utcnow())
            )

    async def begin_totp(self, account_id: str) -> tuple[str, str]:
        """A new secret to enrol (the secret, and the otpauth URI for a QR code); the
        second factor is on once a code from it is confirmed."""
        account = await self._account(account_id)
        if account.totp_enabled_at is not None:
            raise Conflict(
                "A second factor is already on: turn it off first.", code="mfa_already_enabled"
            )
        secret = totp.new_secret()
        sealed = self.keyring.seal(secret, TOTP_CONTEXT.format(id=account.id))
        async with self._sessions.begin() as s:
            await s.execute(
                update(Account).where(Account.id == account.id).values(totp_pending=sealed)
            )
        return secret, totp.provisioning_uri(secret, account.email)

    async def confirm_totp(
        self, account_id: str, code: str, client: Client, session_id: str | None = None
    ) -> list[str]:
        """Turn the enrolled secret on with its first code; returns the recovery codes
        (shown once). The session that enrolled it is no longer restricted."""
        account = await self._account(account_id)
        if account.totp_pending is None:
            raise InvalidRequest(
                "Start an enrolment first (POST /auth/mfa/totp).", code="no_enrolment"
            )
        if not await self._use_totp(account, code, pending=True):
            raise InvalidRequest("That code is not right.", param="code", code="invalid_mfa_code")
        codes = totp.new_recovery_codes()
        async with self._sessions.begin() as s:
            await s.execute(
                update(Account)
                .where(Account.id == account.id)
                .values(
                    totp_secret=account.totp_pending,
                    totp_pending=None,
                    totp_enabled_at=utcnow(),
                    recovery_codes=json.dumps([totp.code_digest(c) for c in codes]),
                )
            )
            if session_id is not None:
                await s.execute(
                    update(AuthSession)
                    .where(AuthSession.id == session_id, AuthSession.account_id == account.id)
                    .values(restricted=False)
                )
        await self._audit_each(account, "mfa.enabled", client, {"method": "totp"})
        return codes

    async def disable_totp(self, account_id: str, code: str, client: Client) -> None:
        """Off, with a current code or a recovery code."""
        account = await self._account(account_id)
        if account.totp_enabled_at is None:
            raise Conflict("No second factor is on.", code="mfa_not_enabled")
        if await self._mfa_required(account.email):
            raise Conflict(
                "An organisation of yours requires a second factor: it cannot be turned off.",
                code="mfa_required_by_organization",
            )
        if not (
            await self._use_totp(account, code) or await self._use_recovery_code(account.id, code)
        ):
            raise InvalidRequest("That code is not right.", param="code", code="invalid_mfa_code")
        async with self._sessions.begin() as s:
            await s.execute(
                update(Account)
                .where(Account.id == account.id)
                .values(totp_secret=None, totp_enabled_at=None, recovery_codes=None)
            )
        await self._audit_each(account, "mfa.disabled", client, {"method": "totp"})

    async def _mfa_required(self, email: str) -> bool:
        async with self._sessions() as s:
            found = await s.scalar(
                select(func.count())
                .select_from(User)
                .join(Organization, Organization.id == User.org_id)
                .where(User.email == email, Organization.require_mfa.is_(True))
            )
        return bool(found)

    async def login_policy(self, org_id: str, require_mfa: bool | None = None) -> dict[str, Any]:
        """The organisation's login policy, changed first when ``require_mfa`` is given."""
        async with self._sessions.begin() as s:
            org = await s.get(Organization, org_id)
            if org is None:
                raise NotFound(f"No organization {org_id!r}.")
            if require_mfa is not None:
                org.require_mfa = require_mfa
            enforced = await s.scalar(
                select(func.count())
                .select_from(SsoConnection)
                .where(SsoConnection.org_id == org_id, SsoConnection.enforced.is_(True))
            )
            return {
                "object": "organization.login_policy",
                "require_mfa": org.require_mfa,
                "sso_enforced": bool(enforced),
            }

    async def unlock(self, org_id: str, user_id: str) -> bool:
        """An admin lifts the login lock of a member's email (the route audits it);
        whether one was kept."""
        user = await self._user(user_id)
        if user is None or user.org_id != org_id:
            raise NotFound(f"No user {user_id!r} in this organisation.", param="user_id")
        return await self.throttle.clear([email_key(user.email)])

    async def erase(
        self, live: LiveSession, password: str | None, client: Client, people: PeopleStore
    ) -> tuple[dict[str, Any], list[str]]:
        """The person's right to erasure: their users leave every organisation (their
        keys revoked), their sessions, links and account go, and the audit log's mentions
        of their email, and of their sessions' addresses in their own entries, read as
        erased (the chain still verifies). A local account confirms with its password.
        Returns the answer and the revoked keys (for the replicas)."""
        account = live.account
        if account.password_hash is not None:
            confirmed = False
            if password:
                stored = account.password_hash
                confirmed = await asyncio.to_thread(verify_password, stored, password)
            if not confirmed:
                raise InvalidRequest(
                    "Confirm with your password.", param="password", code="invalid_password"
                )
        async with self._sessions() as s:
            users = list(await s.scalars(select(User).where(User.email == account.email)))
            for user in users:
                if user.role == "owner":
                    owners = await s.scalar(
                        select(func.count())
                        .select_from(User)
                        .where(User.org_id == user.org_id, User.role == "owner")
                    )
                    if (owners or 0) <= 1:
                        raise Conflict(
                            f"You are the last owner of {user.org_id}: make someone else an "
                            "owner first.",
                            code="last_owner",
                        )
            traces = (
                await s.execute(
                    select(AuthSession.source_ip, AuthSession.user_agent).where(
                        AuthSession.account_id == account.id
                    )
                )
            ).all()
        revoked: list[str] = []
        for user in users:
            revoked += await people.delete_user(user.org_id, user.id, PERMISSIONS)
        async with self._sessions.begin() as s:
            for table, column in (
                (AuthSession, AuthSession.account_id),
                (AuthToken, AuthToken.account_id),
                (Account, Account.id),
            ):
                await s.execute(delete(table).where(column == account.id))
        await self.throttle.clear([email_key(account.email)])
        erased = 0
        if self.audit is not None:
            about = [account.id, *(u.id for u in users)]
            erased = await self.audit.erase([account.email])
            seen = {v for pair in traces for v in pair if v}
            erased += await self.audit.erase(sorted(seen), only_actors=about)
            orgs: list[str | None] = [*sorted({u.org_id for u in users})]
            for org_id in orgs or [None]:
                await self.audit.append(
                    AuditEvent(
                        type="account.erased",
                        org_id=org_id,
                        actor={"type": "session", "session": {"user": {"id": account.id}}},
                        actor_id=account.id,
                        details={"id": account.id, "mentions_erased": erased},
                        result={"status": 200},
                    )
                )
        answer = {
            "object": "auth.account.deleted",
            "id": account.id,
            "deleted": True,
            "audit_mentions_erased": erased,
        }
        return answer, revoked

    @property
    def database(self) -> async_sessionmaker[AsyncSession]:
        return self._sessions

    async def audit_export(self, account: Account, client: Client) -> None:
        await self._audit_each(account, "account.exported", client, {})

    # -- reads ----------------------------------------------------------------------------

    async def account_object(self, account: Account) -> AccountObject:
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(User, Organization)
                    .join(Organization, Organization.id == User.org_id)
                    .where(User.email == account.email)
                    .order_by(User.created_at)
                )
            ).all()
        return AccountObject(
            id=account.id,
            email=account.email,
            email_verified=account.email_verified_at is not None,
            mfa_enabled=account.totp_enabled_at is not None,
            organizations=[
                Membership(id=o.id, name=o.name, user_id=u.id, role=u.role) for u, o in rows
            ],
        )

    async def _account(self, account_id: str) -> Account:
        async with self._sessions() as s:
            account = await s.get(Account, account_id)
        if account is None:
            raise NotFound("No such account.")
        return account

    async def _user(self, user_id: str) -> User | None:
        async with self._sessions() as s:
            return await s.get(User, user_id)

    # -- the audit log --------------------------------------------------------------------

    async def _audit(
        self,
        org_id: str | None,
        user: User | None,
        account: Account,
        event: str,
        client: Client,
        details: dict[str, Any],
        status: int = 200,
    ) -> None:
        if self.audit is None:
            return
        person = {"id": user.id if user else account.id, "email": account.email}
        actor = {"type": "session", "session": {"user": person, "ip_address": client.address}}
        self._background(
            self.audit.append(
                AuditEvent(
                    type=event,
                    org_id=org_id,
                    actor=actor,
                    actor_id=person["id"],
                    details=details,
                    source_ip=client.address,
                    result={"status": status},
                )
            )
        )

    async def _audit_each(
        self, account: Account, event: str, client: Client, details: dict[str, Any]
    ) -> None:
        """In the audit log of every organisation the person belongs to."""
        async with self._sessions() as s:
            users: list[User | None] = list(
                await s.scalars(select(User).where(User.email == account.email))
            )
        for user in users or [None]:
            org = user.org_id if user is not None else None
            await self._audit(org, user, account, event, client, details)

    async def _audit_failure(self, email: str, client: Client, reason: str) -> None:
        """A refused login: in the log of each organisation the email belongs to (the
        platform's if none), with the reason; never the password."""
        if self.audit is None:
            return
        async with self._sessions() as s:
            orgs: list[str | None] = list(
                await s.scalars(select(User.org_id).where(User.email == email))
            )
        for org in orgs or [None]:
            self._background(
                self.audit.append(
                    AuditEvent(
                        type="login.failed",
                        org_id=org,
                        actor={"type": "session", "session": {"ip_address": client.address}},
                        details={"email": email, "reason": reason},
                        source_ip=client.address,
                        result={"status": 429 if reason == "locked" else 401, "code": reason},
                    )
                )
            )

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Audit writes off the answer's path (and its timing): awaited by ``flush``."""

        async def guarded() -> None:
            try:
                await work
            except Exception as exc:  # the answer has gone; the failure is logged
                log.warning("identity: an audit entry was lost: %s", type(exc).__name__)

        task = asyncio.get_running_loop().create_task(guarded())
        self._mails.add(task)
        task.add_done_callback(self._mails.discard)


def new_account(email: str, **fields: Any) -> Account:
    """An account row for ``email`` (a password's hash, or none: signed in by SSO)."""
    return Account(id="acct_" + secrets.token_hex(12), email=email, created_at=utcnow(), **fields)


def session_object(row: AuthSession, current: bool = False) -> SessionObject:
    return SessionObject(
        id=row.id,
        organization=row.org_id,
        user_id=row.user_id,
        created_at=unix(row.created_at) or 0,
        last_seen_at=unix(row.last_seen_at) or 0,
        expires_at=unix(row.expires_at) or 0,
        source_ip=row.source_ip,
        user_agent=row.user_agent,
        current=current,
        restricted=row.restricted,
    )
