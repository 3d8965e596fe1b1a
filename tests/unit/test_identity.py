"""People's logins through the gateway, in-process over the real stores: registration
with a verified email, login with a session cookie that works on the Admin API as the
person's user (CSRF-checked), sessions listed and revoked, brute force slowed then locked
whatever the email, reset by a single-use link, TOTP with recovery codes and no reuse, and
every event in the audit log."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select

from forge.config import PlatformConfig
from forge.db.engine import make_sessionmaker
from forge.db.schema import Account, AuditLogEntry
from forge.people.permissions import PERMISSIONS
from tests.unit.harness import in_process_gateway, platform_config

PASSWORD = "correct horse battery staple"


@asynccontextmanager
async def identity_gateway(fake_openai, engine, tmp_path, **auth: object) -> AsyncIterator:
    """The in-process gateway with logins on: mail to a folder, plain-HTTP cookies, a
    throttle that locks after four failures (``auth``: more settings)."""
    base = platform_config(fake_openai.base_url).model_dump()
    base["auth"] = {
        "mail_dir": str(tmp_path / "mail"),
        "cookie_secure": False,  # the test client speaks plain HTTP
        "reset_ttl_s": 60,
        "login": {"slow_after": 2, "lock_after": 4, "max_delay_s": 0.01, "lock_s": 600},
        **auth,
    }
    async with in_process_gateway(PlatformConfig.model_validate(base), engine) as h:
        h.mail = tmp_path / "mail"  # type: ignore[attr-defined]
        yield h


@pytest.fixture
async def gw(fake_openai, sqlite_engine, tmp_path):
    async with identity_gateway(fake_openai, sqlite_engine, tmp_path) as h:
        yield h


def mails(folder: Path) -> list:
    found = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in found]


async def last_link(gw, email: str, kind: str) -> str:
    """The token of the newest mailed link of ``kind`` (verify, reset) to ``email``."""
    await gw.runtime.identity.flush()
    for mail in reversed(mails(gw.mail)):
        found = re.search(rf"/auth/{kind}\?token=(\S+)", mail.get_content())
        if mail["To"] == email and found:
            return found.group(1)
    raise AssertionError(f"no {kind} mail to {email}")


async def member(gw, email: str, role: str = "owner", org: str = "org-default") -> str:
    """A user of ``org`` (invited and accepted), as the Admin API makes them."""
    invite = await gw.runtime.people.create_invite(org, email, role, None, PERMISSIONS)
    _, user, _ = await gw.runtime.people.accept_invite(invite.token, None)
    return user.id


async def account(gw, email: str, role: str = "owner") -> str:
    """A registered, verified account with a membership; its user id."""
    user_id = await member(gw, email, role)
    assert (
        await post(gw, "/auth/register", {"email": email, "password": PASSWORD})
    ).status_code == 202
    token = await last_link(gw, email, "verify")
    assert (await post(gw, "/auth/verify", {"token": token})).status_code == 200
    return user_id


async def post(gw, path: str, body: dict | None = None, **kw):
    return await gw.http.post(path, json=body or {}, **kw)


async def login(gw, email: str, password: str = PASSWORD, **extra):
    gw.http.cookies.clear()
    return await post(gw, "/auth/login", {"email": email, "password": password, **extra})


def use_cookie(gw, token: str) -> None:
    """Present this session's cookie (and only it) from now on."""
    gw.http.cookies.clear()
    gw.http.cookies.set("forge_session", token)


def csrf(response) -> dict[str, str]:
    return {"x-csrf-token": response.json()["csrf_token"]}


async def audit_types(gw) -> list[tuple[str, dict]]:
    """Every audit entry as written (its personal values put back), with its type."""
    await gw.runtime.identity.flush()
    async with make_sessionmaker(gw.engine)() as s:
        rows = list(await s.scalars(select(AuditLogEntry).order_by(AuditLogEntry.seq)))
    entries = await gw.runtime.audit.revealed(rows)
    return [(e["type"], e) for e in entries]


async def test_register_verify_and_a_session_that_acts_as_the_user(gw):
    email = "grace@example.com"
    await member(gw, email)
    weak = await post(gw, "/auth/register", {"email": email, "password": "short"})
    assert weak.status_code == 400 and weak.json()["error"]["code"] == "weak_password"
    named = await post(gw, "/auth/register", {"email": email, "password": "grace-is-my-password"})
    assert named.json()["error"]["param"] == "password"  # the email's name in it
    first = await post(gw, "/auth/register", {"email": email, "password": PASSWORD})
    assert first.status_code == 202
    refused = await login(gw, email)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "email_not_verified"
    token = await last_link(gw, email, "verify")
    verified = await post(gw, "/auth/verify", {"token": token})
    assert (
        verified.json()["email_verified"] and verified.json()["organizations"][0]["role"] == "owner"
    )
    again = await post(gw, "/auth/verify", {"token": token})
    assert again.status_code == 400 and again.json()["error"]["code"] == "token_used"
    # registering a taken email answers the same; its owner is told by mail
    taken = await post(gw, "/auth/register", {"email": email, "password": PASSWORD + "!"})
    assert (taken.status_code, taken.json()) == (first.status_code, first.json())
    await gw.runtime.identity.flush()
    assert mails(gw.mail)[-1]["Subject"] == "Someone tried to sign up with your email"

    signed = await login(gw, email)
    assert signed.status_code == 200, signed.text
    cookies = signed.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("forge_session="))
    assert "HttpOnly" in session_cookie and "SameSite=lax" in session_cookie
    me = await gw.http.get("/auth/me")
    assert me.json()["email"] == email and not me.json()["mfa_enabled"]

    # the Admin API with the cookie, as the owner user; a state change needs the CSRF token
    users = await gw.http.get("/v1/organization/users")
    assert users.status_code == 200 and email in [u["email"] for u in users.json()["data"]]
    project = {"name": "from-the-console"}
    no_token = await post(gw, "/v1/organization/projects", project)
    assert no_token.status_code == 403 and no_token.json()["error"]["code"] == "csrf_failed"
    made = await post(gw, "/v1/organization/projects", project, headers=csrf(signed))
    assert made.status_code == 200, made.text

    # a reader's session reads, and is refused a change
    await account(gw, "rea@example.com", role="reader")
    reader = await login(gw, "rea@example.com")
    assert (await gw.http.get("/v1/organization/users")).status_code == 200
    denied = await post(gw, "/v1/organization/projects", {"name": "x"}, headers=csrf(reader))
    assert denied.status_code == 403

    logged_out = await post(gw, "/auth/logout", headers=csrf(reader))
    assert logged_out.status_code == 200
    use_cookie(gw, reader.cookies["forge_session"])
    assert (await gw.http.get("/auth/me")).json()["error"]["code"] == "session_ended"
    types = [t for t, _ in await audit_types(gw)]
    assert {"login.succeeded", "logout.succeeded", "account.email_verified"} <= set(types)


async def test_sessions_are_listed_and_revoked_one_or_all(gw):
    email = "bo@example.com"
    await member(gw, "owner@example.com")  # the organisation keeps an owner
    user_id = await account(gw, email, role="reader")
    first = await login(gw, email)
    first_cookie = first.cookies["forge_session"]
    second = await login(gw, email)
    listed = (await gw.http.get("/auth/sessions")).json()["data"]
    assert len(listed) == 2 and [s["current"] for s in listed] == [True, False]
    gone = listed[1]["id"]
    refused = await gw.http.delete(f"/auth/sessions/{gone}")  # no CSRF token
    assert refused.status_code == 403
    revoked = await gw.http.delete(f"/auth/sessions/{gone}", headers=csrf(second))
    assert revoked.json()["deleted"]
    use_cookie(gw, first_cookie)
    assert (await gw.http.get("/auth/me")).status_code == 401
    await login(gw, email)
    third = await login(gw, email)
    done = await post(gw, "/auth/sessions/revoke_all", headers=csrf(third))
    assert done.json()["revoked"] == 3  # the second login's, and these two
    assert (await gw.http.get("/auth/me")).status_code == 401
    # a person removed from the organisation: their sessions end at once
    again = await login(gw, email)
    assert again.status_code == 200
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    removed = await gw.http.delete(f"/v1/organization/users/{user_id}", headers=admin)
    assert removed.status_code == 200, removed.text
    assert (await gw.http.get("/auth/me")).status_code == 401


async def test_failed_logins_slow_then_lock_known_and_unknown_emails_alike(gw):
    known, unknown = "cy@example.com", "nobody@example.com"
    user_id = await account(gw, known)
    answers = {}
    for email in (known, unknown):
        for _ in range(4):
            wrong = await login(gw, email, "not the password at all")
            assert wrong.status_code == 401
        answers[email] = wrong.json()
        locked = await login(gw, email, "not the password at all")
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
        answers[email + "/locked"] = locked.json()
    assert answers[known] == answers[unknown]  # nothing tells them apart
    assert answers[known + "/locked"] == answers[unknown + "/locked"]
    assert (await login(gw, known)).status_code == 429  # the right password, locked too
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    unlocked = await gw.http.post(f"/v1/organization/users/{user_id}/unlock", headers=admin)
    assert unlocked.json()["was_locked"]
    assert (await login(gw, known)).status_code == 200
    failures = [c for t, c in await audit_types(gw) if t == "login.failed"]
    details = [c["login.failed"] for c in failures]
    reasons = {d["reason"] for d in details if d["email"] == known}
    assert reasons == {"invalid_credentials", "locked"}
    assert all("password" not in str(d).lower() for d in details)


async def test_a_reset_link_works_once_and_ends_every_session(gw):
    email = "di@example.com"
    await account(gw, email)
    session = await login(gw, email)
    for address in (email, "nobody@example.com"):  # the same answer either way
        asked = await post(gw, "/auth/password/reset", {"email": address})
        assert asked.status_code == 202
    token = await last_link(gw, email, "reset")
    weak = await post(gw, "/auth/password/reset/confirm", {"token": token, "password": "abc"})
    assert weak.status_code == 400 and weak.json()["error"]["code"] == "weak_password"
    new = PASSWORD + " again"
    done = await post(gw, "/auth/password/reset/confirm", {"token": token, "password": new})
    assert done.status_code == 200
    reused = await post(gw, "/auth/password/reset/confirm", {"token": token, "password": new})
    assert reused.status_code == 400 and reused.json()["error"]["code"] == "token_used"
    bogus = await post(gw, "/auth/password/reset/confirm", {"token": "x" * 43, "password": new})
    assert bogus.json()["error"]["code"] == "invalid_token"
    use_cookie(gw, session.cookies["forge_session"])
    assert (await gw.http.get("/auth/me")).status_code == 401  # every session ended
    assert (await login(gw, email)).status_code == 401
    changed = await login(gw, email, new)
    assert changed.status_code == 200

    identity = gw.runtime.identity
    identity.config = identity.config.model_copy(update={"reset_ttl_s": 0.2})
    await post(gw, "/auth/password/reset", {"email": email})
    token = await last_link(gw, email, "reset")
    time.sleep(0.3)
    expired = await post(gw, "/auth/password/reset/confirm", {"token": token, "password": new})
    assert expired.json()["error"]["code"] == "token_expired"
    assert "password.reset" in [t for t, _ in await audit_types(gw)]


async def test_totp_with_recovery_codes_and_no_code_twice(gw):
    email = "ed@example.com"
    await account(gw, email)
    signed = await login(gw, email)
    enrol = (await post(gw, "/auth/mfa/totp", headers=csrf(signed))).json()
    assert enrol["otpauth_uri"].startswith("otpauth://totp/PromptForge:ed%40example.com")
    code = pyotp.TOTP(enrol["secret"]).now()
    wrong = await post(gw, "/auth/mfa/totp/confirm", {"code": "000000"}, headers=csrf(signed))
    assert wrong.status_code == 400 or code == "000000"
    codes = (await post(gw, "/auth/mfa/totp/confirm", {"code": code}, headers=csrf(signed))).json()
    assert len(codes["codes"]) == 10
    async with gw.engine.connect() as conn:  # sealed at rest, never the secret itself
        stored = (
            await conn.execute(select(Account.totp_secret).where(Account.email == email))
        ).scalar()
    assert enrol["secret"] not in stored

    needed = await login(gw, email)
    assert needed.status_code == 401 and needed.json()["error"]["code"] == "mfa_required"
    # the code that confirmed the enrolment is spent: good once
    reused = await login(gw, email, totp_code=code)
    assert reused.status_code == 401 and reused.json()["error"]["code"] == "invalid_mfa_code"
    recovery = codes["codes"][0]
    assert (await login(gw, email, recovery_code=recovery)).status_code == 200
    assert (await login(gw, email, recovery_code=recovery)).status_code == 401  # once
    signed = await login(gw, email, recovery_code=codes["codes"][1])
    assert (await gw.http.get("/auth/me")).json()["mfa_enabled"]
    off = await post(
        gw, "/auth/mfa/totp/disable", {"code": codes["codes"][2]}, headers=csrf(signed)
    )
    assert off.json()["mfa_enabled"] is False
    assert (await login(gw, email)).status_code == 200
    types = [t for t, _ in await audit_types(gw)]
    assert {"mfa.enabled", "mfa.disabled"} <= set(types)


async def test_an_organisation_that_requires_mfa_restricts_sessions_until_one_is_enrolled(gw):
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    email = "fay@example.com"
    await member(gw, "keeper@example.com")  # the organisation keeps another owner
    await account(gw, email)
    policy = await gw.http.post("/v1/organization/login_policy", headers=admin,
                                json={"require_mfa": True})  # fmt: skip
    assert policy.json() == {
        "object": "organization.login_policy",
        "require_mfa": True,
        "sso_enforced": False,
    }
    signed = await login(gw, email)
    assert signed.status_code == 200 and signed.json()["session"]["restricted"]
    blocked = await gw.http.get("/v1/organization/users")
    assert blocked.status_code == 403
    assert blocked.json()["error"]["code"] == "mfa_enrollment_required"
    assert (await gw.http.get("/auth/me")).status_code == 200  # it may see itself, and enrol
    enrol = (await post(gw, "/auth/mfa/totp", headers=csrf(signed))).json()
    code = pyotp.TOTP(enrol["secret"]).now()
    codes = await post(gw, "/auth/mfa/totp/confirm", {"code": code}, headers=csrf(signed))
    assert codes.status_code == 200
    assert (await gw.http.get("/v1/organization/users")).status_code == 200  # lifted
    kept = await post(gw, "/auth/mfa/totp/disable", {"code": codes.json()["codes"][0]},
                      headers=csrf(signed))  # fmt: skip
    assert kept.status_code == 409
    assert kept.json()["error"]["code"] == "mfa_required_by_organization"


async def test_a_person_exports_their_data_as_a_zip(gw):
    import io
    import json as jsonlib
    import zipfile

    email = "gil@example.com"
    user_id = await account(gw, email)
    key = await gw.keys.create_key("gil's", owner_type="user", owner_id=user_id)
    await gw.sdk(key.key).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert await gw.runtime.shipper.flush()
    assert (await login(gw, email, "wrong password here")).status_code == 401
    await login(gw, email)
    answer = await gw.http.get("/auth/export")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert set(archive.namelist()) == {
        "account.json", "memberships.json", "sessions.json", "api_keys.json",
        "audit_log.json", "usage.csv",
    }  # fmt: skip
    read = lambda name: jsonlib.loads(archive.read(name))  # noqa: E731
    assert read("account.json")["email"] == email
    assert read("memberships.json")[0]["user_id"] == user_id
    keys = read("api_keys.json")
    assert key.info.id in [k["id"] for k in keys]  # with the one accepting the invitation made
    assert key.key not in archive.read("api_keys.json").decode()  # never a key itself
    usage = archive.read("usage.csv").decode().splitlines()
    assert usage[0].startswith("request_id,") and len(usage) == 2
    events = {e["type"] for e in read("audit_log.json")}
    assert {"login.failed", "login.succeeded"} <= events
    gw.http.cookies.clear()
    assert (await gw.http.get("/auth/export")).status_code == 401  # signed in only


async def test_erasure_removes_the_person_and_their_audit_mentions_but_not_the_chain(gw):
    email = "hal@example.com"
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    await member(gw, "keeper@example.com")  # the organisation keeps an owner
    user_id = await account(gw, email)
    assert (await login(gw, email, "not hal's password")).status_code == 401
    signed = await login(gw, email)
    await gw.runtime.identity.flush()

    async def audit_log() -> list[dict]:
        page = await gw.http.get(
            "/v1/organization/audit_logs", headers=admin, params={"limit": 100}
        )
        return page.json()["data"]

    before = await audit_log()
    assert any((e.get("login.failed") or {}).get("email") == email for e in before)
    async with gw.engine.connect() as conn:  # the chain commits to the email, never holds it
        raw = [c for (c,) in (await conn.execute(select(AuditLogEntry.content))).all()]
    assert raw and not any(email in c for c in raw)

    wrong = await post(gw, "/auth/account/delete", {"password": "nope"}, headers=csrf(signed))
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "password"
    done = await post(gw, "/auth/account/delete", {"password": PASSWORD}, headers=csrf(signed))
    assert done.status_code == 200, done.text
    assert done.json()["deleted"] and done.json()["audit_mentions_erased"] >= 3
    after = await audit_log()
    assert email not in str(after)
    erased = [e for e in after if (e.get("login.failed") or {}).get("email") == "[erased]"]
    assert erased  # the entry stays, its personal value a tombstone
    operator = {"authorization": f"Bearer {gw.operator_key}"}
    verdict = (await gw.http.get("/admin/audit/verify", headers=operator)).json()
    assert verdict["ok"], verdict
    assert (await login(gw, email)).status_code == 401
    users = (await gw.http.get("/v1/organization/users", headers=admin)).json()["data"]
    assert user_id not in [u["id"] for u in users]
