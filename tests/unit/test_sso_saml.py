"""Single sign-on through SAML 2.0 against pysaml2's own identity provider, served on
loopback by the test (tests/saml_idp.py) with a key made here. The gateway runs
in-process: its SP metadata goes to the IdP, the IdP's metadata into a connection, and a
sign-in goes start → AuthnRequest → IdP → Response posted to the ACS → session, with the
role the person's groups give. A Response that is unsigned, tampered with, signed with
SHA-1, for another audience, replayed or answering another request is a 401 whose reason
lands in the audit log."""

from __future__ import annotations

import base64
import json
import re
import shutil

import httpx2
import pytest
from sqlalchemy import select

from forge.db.schema import AuditLogEntry
from tests.saml_idp import RSA_SHA1, RSA_SHA256, SHA1, SHA256, IdentityProvider, posted_form
from tests.unit.test_identity import identity_gateway

pytestmark = pytest.mark.skipif(
    shutil.which("xmlsec1") is None, reason="needs xmlsec1 (scripts/setup.sh installs it)"
)
ACS = "http://gateway/auth/saml/acs"
ADMIN_GROUP = "platform-admins"
XMLENC = "http://www.w3.org/2001/04/xmlenc#"


@pytest.fixture
async def gw(fake_openai, sqlite_engine, tmp_path):
    async with identity_gateway(
        fake_openai, sqlite_engine, tmp_path, public_url="http://gateway"
    ) as h:
        yield h


@pytest.fixture
async def idp(gw, tmp_path):
    provider = IdentityProvider(tmp_path)
    served = await gw.http.get("/auth/saml/metadata")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("application/samlmetadata+xml")
    assert 'WantAssertionsSigned="true"' in served.text and ACS in served.text
    provider.trust(served.text)
    provider.start()
    yield provider
    provider.stop()


async def connect(gw, idp: IdentityProvider) -> dict:
    async with httpx2.AsyncClient() as http:
        metadata = (await http.get(idp.url + "/metadata")).text
    made = await gw.http.post(
        "/v1/organization/sso_connections",
        json={
            "kind": "saml",
            "idp_metadata": metadata,
            "email_domains": ["acme.test"],
            "group_roles": {ADMIN_GROUP: "owner"},
        },
        headers={"authorization": f"Bearer {gw.admin_key}"},
    )
    assert made.status_code == 200, made.text
    return made.json()


async def at_the_provider(gw, email: str = "kay@acme.test") -> dict[str, str]:
    """Start at the platform, sign in at the IdP: the form it posts back to the ACS, and
    (as ``_browser``) the cookie the start left on the browser."""
    started = await gw.http.get("/auth/sso/start", params={"email": email, "return_to": "/console"})
    assert started.status_code == 303, started.text
    cookie = started.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Path=/auth" in cookie and "Max-Age=600" in cookie
    async with httpx2.AsyncClient() as browser:
        page = await browser.get(started.headers["location"])
    assert page.status_code == 200, page.text
    action, fields = posted_form(page.text)
    assert action == ACS and set(fields) == {"SAMLResponse", "RelayState"}
    return {**fields, "_browser": started.cookies["forge_sso"]}


async def post(gw, fields: dict[str, str]) -> httpx2.Response:
    """The IdP's form, posted by the browser holding ``_browser``'s cookie (if any)."""
    form = {k: v for k, v in fields.items() if k != "_browser"}
    gw.http.cookies.clear()
    headers = {"cookie": f"forge_sso={fields['_browser']}"} if "_browser" in fields else {}
    return await gw.http.post("/auth/saml/acs", data=form, headers=headers)


async def audited(gw, kind: str) -> list[dict]:
    await gw.runtime.identity.flush()
    async with gw.engine.connect() as conn:
        rows = (await conn.execute(select(AuditLogEntry.type, AuditLogEntry.content))).all()
    return [json.loads(c)[kind] for t, c in rows if t == kind]


async def test_sign_in_through_a_saml_provider_provisions_the_person_with_their_groups_role(
    gw, idp
):
    connection = await connect(gw, idp)
    assert connection["kind"] == "saml" and connection["issuer"] == idp.entity_id
    assert connection["redirect_uri"] == ACS
    assert connection["sp_entity_id"] == "http://gateway/auth/saml/metadata"

    idp.person.groups = ["engineering", ADMIN_GROUP]
    done = await post(gw, await at_the_provider(gw))
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/console"
    me = (await gw.http.get("/auth/me")).json()
    assert me["email"] == "kay@acme.test" and me["email_verified"]
    assert [(o["id"], o["role"]) for o in me["organizations"]] == [("org-default", "owner")]
    assert (await gw.http.get("/v1/organization/users")).status_code == 200  # as its owner

    idp.person.groups = ["engineering"]  # left the admins: the next sign-in says so
    assert (await post(gw, await at_the_provider(gw))).status_code == 303
    me = (await gw.http.get("/auth/me")).json()
    assert me["organizations"][0]["role"] == "reader"
    assert [e.get("method") for e in await audited(gw, "login.succeeded")] == ["saml", "saml"]


async def test_unsigned_tampered_weak_foreign_and_replayed_responses_are_refused(gw, idp):
    await connect(gw, idp)

    def refused_for(answer: httpx2.Response, words: str) -> None:
        assert answer.status_code == 401, answer.text
        error = answer.json()["error"]
        assert error["code"] == "sso_refused" and words in error["message"], error

    idp.sign_assertion = False
    refused_for(await post(gw, await at_the_provider(gw)), "unsigned assertion")
    idp.sign_assertion = True

    signed = await at_the_provider(gw)
    xml = base64.b64decode(signed["SAMLResponse"]).decode()
    assert ">Kay<" in xml
    forged = base64.b64encode(xml.replace(">Kay<", ">Eve<").encode()).decode()
    refused_for(await post(gw, {**signed, "SAMLResponse": forged}), "bad signature")

    # a signed assertion tucked into an EncryptedAssertion (where pysaml2 skips its
    # InResponseTo check): we publish no encryption key, so nothing encrypted passes
    signed = await at_the_provider(gw)
    xml = base64.b64decode(signed["SAMLResponse"]).decode()
    prefix = re.search(r"<(\w+):Assertion[ >]", xml).group(1)  # type: ignore[union-attr]
    tucked = xml.replace(
        f"<{prefix}:Assertion ",
        f'<{prefix}:EncryptedAssertion><x:EncryptedData xmlns:x="{XMLENC}"/>'
        f"</{prefix}:EncryptedAssertion><{prefix}:Assertion ",
        1,
    )
    forged = base64.b64encode(tucked.encode()).decode()
    refused_for(await post(gw, {**signed, "SAMLResponse": forged}), "encrypted content")

    idp.sign_alg, idp.digest_alg = RSA_SHA1, SHA1
    refused_for(await post(gw, await at_the_provider(gw)), "weak signature algorithm")
    idp.sign_alg, idp.digest_alg = RSA_SHA256, SHA256

    idp.audience = "https://other.example/auth/saml/metadata"
    refused_for(await post(gw, await at_the_provider(gw)), "audience mismatch")
    idp.audience = None

    # login CSRF: a sign-in the attacker started, its Response posted by the victim's
    # browser (which lacks the attacker's cookie)
    theirs = await at_the_provider(gw)
    refused_for(await post(gw, {**theirs, "_browser": "the-victims-own"}), "browser mismatch")

    good = await at_the_provider(gw)
    other_start = await at_the_provider(gw)  # a second sign-in under way
    answering_another = {**other_start, "SAMLResponse": good["SAMLResponse"]}
    refused_for(await post(gw, answering_another), "unsolicited response")
    assert (await post(gw, good)).status_code == 303  # the real one, once
    refused_for(await post(gw, good), "replayed state")

    refused_for(await post(gw, {"RelayState": good["RelayState"]}), "missing response")
    garbage = {**(await at_the_provider(gw)), "SAMLResponse": "not base64!"}
    refused_for(await post(gw, garbage), "malformed response")

    reasons = {e["reason"] for e in await audited(gw, "login.failed")}
    assert {
        "unsigned_assertion",
        "bad_signature",
        "weak_signature_algorithm",
        "audience_mismatch",
        "unsolicited_response",
        "replayed_state",
        "missing_response_or_state",
        "malformed_response",
        "encrypted_content",
        "browser_mismatch",
    } <= reasons


async def test_metadata_that_is_not_one_signing_identity_provider_is_a_400(gw, idp):
    sp_only = (await gw.http.get("/auth/saml/metadata")).text  # an SP's, not an IdP's
    for metadata in ("<not-xml" + " " * 100, sp_only):
        made = await gw.http.post(
            "/v1/organization/sso_connections",
            json={"kind": "saml", "idp_metadata": metadata, "email_domains": ["acme.test"]},
            headers={"authorization": f"Bearer {gw.admin_key}"},
        )
        assert made.status_code == 400, made.text
        assert made.json()["error"]["code"] == "invalid_idp_metadata"
