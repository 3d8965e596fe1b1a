"""Single sign-on against a real OpenID provider: the certified `oidc-provider` package
(npm), started on loopback with node, its development login and consent screens
submitted as a browser would. The gateway runs in-process; the sign-in goes start →
provider → callback → session, provisions the person just in time with the role their
groups give, and refuses a wrong, replayed or missing state, a return URL off the
platform, and local passwords where SSO is enforced. The ID token checks (signature,
issuer, audience, expiry, nonce) are also driven one by one with tokens signed here."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey
from sqlalchemy import select

from forge.db.schema import AuditLogEntry
from forge.identity.oidc import SsoRefused, check_id_token
from tests.unit.test_identity import account, identity_gateway, login

JS = Path(__file__).resolve().parents[1] / "js"
CLIENT_ID, CLIENT_SECRET = "promptforge", "s3cret-of-the-client"
REDIRECT = "http://gateway/auth/sso/callback"
GROUPS = {"kay@acme.test": ["engineering", "platform-admins"], "lee@acme.test": ["engineering"]}

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "oidc-provider").exists(),
    reason="needs node and `npm ci --prefix tests/js` (scripts/setup.sh does both)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def idp():
    port = _free_port()
    proc = subprocess.Popen(
        ["node", str(JS / "oidc_idp.mjs"), str(port), CLIENT_ID, CLIENT_SECRET, REDIRECT,
         json.dumps(GROUPS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if line.startswith("ready "):
                yield line.split()[1].strip()
                break
            if proc.poll() is not None:
                pytest.fail(f"the OpenID provider did not start: {line}")
        else:
            pytest.fail("the OpenID provider did not start in 30 s")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def gw(fake_openai, sqlite_engine, tmp_path):
    async with identity_gateway(
        fake_openai, sqlite_engine, tmp_path, public_url="http://gateway"
    ) as h:
        yield h


async def connect(gw, issuer: str, **extra) -> dict:
    body = {
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "email_domains": ["acme.test"],
        "group_roles": {"platform-admins": "owner"},
        "default_role": "reader",
        **extra,
    }
    made = await gw.http.post(
        "/v1/organization/sso_connections",
        json=body,
        headers={"authorization": f"Bearer {gw.admin_key}"},
    )
    assert made.status_code == 200, made.text
    return made.json()


async def through_the_provider(start: str, login_name: str) -> str:
    """What a browser does at the provider: log in, consent; returns the callback URL
    the provider sends it back to."""
    async with httpx2.AsyncClient(follow_redirects=False, timeout=10) as browser:
        url = start
        for _ in range(12):
            answer = await browser.get(url)
            if answer.status_code in (302, 303):
                url = urljoin(url, answer.headers["location"])
                if url.startswith(REDIRECT):
                    return url
                continue
            assert answer.status_code == 200, answer.text
            prompt = "login" if 'name="login"' in answer.text else "consent"
            form = {"prompt": prompt, "login": login_name, "password": "anything"}
            posted = await browser.post(url, data=form)
            assert posted.status_code in (302, 303), posted.text
            url = urljoin(url, posted.headers["location"])
        raise AssertionError("the provider never sent the browser back")


async def sso(gw, email: str, return_to: str = "/console") -> httpx2.Response:
    started = await gw.http.get("/auth/sso/start", params={"email": email, "return_to": return_to})
    assert started.status_code == 303, started.text
    browser = started.cookies["forge_sso"]  # what the start left on the browser
    callback = await through_the_provider(started.headers["location"], email)
    gw.http.cookies.clear()
    cookie = {"cookie": f"forge_sso={browser}"}
    return await gw.http.get(callback.removeprefix("http://gateway"), headers=cookie)


@needs_node
async def test_sign_in_through_the_provider_provisions_the_person_with_their_groups_role(gw, idp):
    connection = await connect(gw, idp)
    assert connection["redirect_uri"] == REDIRECT and "client_secret" not in connection
    started = await gw.http.get("/auth/sso/start", params={"email": "kay@acme.test"})
    query = parse_qs(urlsplit(started.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["state"] and query["nonce"]

    done = await sso(gw, "kay@acme.test")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/console"
    me = (await gw.http.get("/auth/me")).json()
    assert me["email"] == "kay@acme.test" and me["email_verified"]
    assert [(o["id"], o["role"]) for o in me["organizations"]] == [("org-default", "owner")]
    assert (await gw.http.get("/v1/organization/users")).status_code == 200  # as its owner

    await sso(gw, "lee@acme.test")
    lee = (await gw.http.get("/auth/me")).json()
    assert lee["organizations"][0]["role"] == "reader"  # no mapped group: the default
    async with gw.engine.connect() as conn:
        rows = (await conn.execute(select(AuditLogEntry.type, AuditLogEntry.content))).all()
    methods = [
        json.loads(c)["login.succeeded"].get("method") for t, c in rows if t == "login.succeeded"
    ]
    assert methods == ["oidc", "oidc"]


@needs_node
async def test_a_wrong_replayed_or_missing_state_and_an_outside_return_url_are_refused(gw, idp):
    await connect(gw, idp)
    started = await gw.http.get("/auth/sso/start", params={"email": "kay@acme.test"})
    callback = await through_the_provider(started.headers["location"], "kay@acme.test")
    path = callback.removeprefix("http://gateway")
    code = parse_qs(urlsplit(callback).query)["code"][0]
    wrong = await gw.http.get("/auth/sso/callback", params={"code": code, "state": "forged"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "sso_refused"
    assert (await gw.http.get(path)).status_code == 303  # the real one, once
    replayed = await gw.http.get(path)
    assert replayed.status_code == 401 and "replayed state" in replayed.json()["error"]["message"]
    denied = await gw.http.get("/auth/sso/callback", params={"error": "access_denied"})
    assert denied.status_code == 401
    for outside in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        refused = await gw.http.get(
            "/auth/sso/start", params={"email": "kay@acme.test", "return_to": outside}
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "return_to"
    unknown = await gw.http.get("/auth/sso/start", params={"email": "x@elsewhere.test"})
    assert unknown.status_code == 404
    # login CSRF: the attacker's own callback, opened by the victim's browser
    started = await gw.http.get("/auth/sso/start", params={"email": "kay@acme.test"})
    callback = await through_the_provider(started.headers["location"], "kay@acme.test")
    gw.http.cookies.clear()
    csrf = await gw.http.get(callback.removeprefix("http://gateway"))
    assert csrf.status_code == 401 and "browser mismatch" in csrf.json()["error"]["message"]
    await asyncio.sleep(0)
    await gw.runtime.identity.flush()
    async with gw.engine.connect() as conn:
        rows = (await conn.execute(select(AuditLogEntry.type, AuditLogEntry.content))).all()
    reasons = {json.loads(c)["login.failed"]["reason"] for t, c in rows if t == "login.failed"}
    assert {"invalid_state", "replayed_state", "provider_error", "browser_mismatch"} <= reasons


@needs_node
async def test_enforced_sso_refuses_local_passwords_but_the_break_glass_owners(gw, idp):
    await account(gw, "ops@acme.test")  # a local password, before SSO was enforced
    await account(gw, "root@acme.test")
    assert (await login(gw, "ops@acme.test")).status_code == 200
    duplicate = {"email_domains": ["acme.test"]}
    await connect(gw, idp, enforced=True, break_glass_email="root@acme.test")
    again = await gw.http.post(
        "/v1/organization/sso_connections",
        json={"issuer": idp, "client_id": "x", "client_secret": "y", **duplicate},
        headers={"authorization": f"Bearer {gw.admin_key}"},
    )
    assert again.status_code == 409  # a domain signs in through one connection
    refused = await login(gw, "ops@acme.test")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "sso_required"
    assert (await login(gw, "root@acme.test")).status_code == 200
    assert (await sso(gw, "ops@acme.test")).status_code == 303  # SSO still lets them in


# -- the ID token's checks, one by one, with tokens signed here ---------------------------

KEY = RSAKey.generate_key(2048, parameters={"kid": "good"}, private=True)
OTHER = RSAKey.generate_key(2048, parameters={"kid": "good"}, private=True)  # same kid
JWKS = KeySet([KEY]).as_dict(private=False)
ISSUER, NOW = "https://idp.example", 1_800_000_000


def token(key=KEY, **claims) -> str:
    body = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "u1", "nonce": "n1", "exp": NOW + 300,
            "iat": NOW, "email": "kay@acme.test", **claims}  # fmt: skip
    return jwt.encode({"alg": "RS256", "kid": "good"}, body, key)


def reason(id_token: str) -> str:
    with pytest.raises(SsoRefused) as refused:
        check_id_token(id_token, JWKS, ISSUER, CLIENT_ID, "n1", now=NOW)
    assert refused.value.status_code == 401
    return refused.value.reason


def test_an_id_token_passes_only_every_check():
    assert check_id_token(token(), JWKS, ISSUER, CLIENT_ID, "n1", now=NOW)["sub"] == "u1"
    assert reason(token(key=OTHER)) == "bad_signature"
    assert reason(token(iss="https://evil.example")) == "invalid_iss"
    assert reason(token(aud="someone-else")) == "invalid_aud"
    assert reason(token(exp=NOW - 120)) == "expired_id_token"
    assert reason(token(nonce="n2")) == "invalid_nonce"
    assert reason(token(aud=[CLIENT_ID, "other"])) == "invalid_azp"
    assert reason("not.a.token") == "malformed_id_token"
    # a token MACed with a shared secret: not an algorithm an ID token may use here
    maced = jwt.encode({"alg": "HS256"}, {"iss": ISSUER}, OctKey.import_key("x" * 32))
    assert reason(maced) == "malformed_id_token"
