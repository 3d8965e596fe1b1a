"""SAML 2.0, the service provider's side, with ``pysaml2`` (signatures by Debian's
``xmlsec1``, which pysaml2 runs): our metadata, an imported identity provider's metadata,
the AuthnRequest (HTTP-Redirect) and the Response posted back to the assertion consumer
service (HTTP-POST).

pysaml2 checks the signature, ``InResponseTo`` against the one request we sent, the
audience and the recipient, but treats some of them as optional (an assertion without an
audience restriction passes; a wrong ``Destination`` comes back as ``None``). We require
each of them again on what it accepted, so that "signed, for us, to our ACS, answering our
request" is stated here, once. A refusal names its reason (for the audit log), never the
assertion. pysaml2 is synchronous and forks ``xmlsec1``: callers run these in a thread."""

from __future__ import annotations

import base64
import binascii
import logging
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from defusedxml import DefusedXmlException, ElementTree

from forge.errors import InvalidRequest
from forge.identity.oidc import refused

if TYPE_CHECKING:  # pysaml2 itself is imported on first use: see the note below
    from saml2.client import Saml2Client
    from saml2.config import SPConfig
    from saml2.response import AuthnResponse

# pysaml2 (with xmlschema, pyOpenSSL) is ~45 MiB in a bare interpreter and 13 MiB more
# in a gateway replica (which has the rest loaded anyway). Every replica and the `forge
# up` driver import this module while most installs never configure SAML: pysaml2's
# modules are imported inside the functions.
BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
NAMEID_FORMAT_EMAILADDRESS = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
SCM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"

LEEWAY_S = 60
MAX_RESPONSE_BYTES = 256 * 1024
# Where identity providers put the email and the groups (Okta, Entra, ADFS, Shibboleth).
EMAIL_ATTRIBUTES = frozenset(
    {
        "email",
        "mail",
        "emailaddress",
        "urn:oid:0.9.2342.19200300.100.1.3",
        "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    }
)
GROUP_ATTRIBUTES = frozenset(
    {
        "groups",
        "memberof",
        "ismemberof",
        "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
        "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups",
    }
)
NAME_ATTRIBUTES = frozenset(
    {"name", "displayname", "cn", "http://schemas.microsoft.com/identity/claims/displayname"}
)

# pysaml2 logs whole assertions at DEBUG (personal data); never let them through.
logging.getLogger("saml2").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class SignedAssertion:
    """What an accepted assertion says about the person."""

    name_id: str
    email: str | None
    groups: list[str] = field(default_factory=list)
    name: str | None = None

    def claims(self) -> dict[str, Any]:
        return {"sub": self.name_id, "email": self.email, "groups": self.groups, "name": self.name}


def xmlsec_binary() -> str:
    found = shutil.which("xmlsec1")
    if found is None:
        raise InvalidRequest(
            "SAML needs the xmlsec1 program on the gateway hosts (apt-get install xmlsec1).",
            code="saml_unavailable",
        )
    return found


class ServiceProvider:
    """This platform as a SAML service provider, at ``public_url``."""

    def __init__(self, public_url: str) -> None:
        base = public_url.rstrip("/")
        self.entity_id = base + "/auth/saml/metadata"
        self.acs_url = base + "/auth/saml/acs"

    def _config(self, idp_metadata: str | None, checks: bool = True) -> SPConfig:
        settings: dict[str, Any] = {
            "entityid": self.entity_id,
            "xmlsec_binary": xmlsec_binary() if checks else None,
            "accepted_time_diff": LEEWAY_S,
            "allow_unknown_attributes": True,
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(self.acs_url, BINDING_HTTP_POST)]
                    },
                    "allow_unsolicited": False,
                    "authn_requests_signed": False,
                    "want_assertions_signed": True,
                    "want_response_signed": False,
                    "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                }
            },
        }
        if idp_metadata is not None:
            settings["metadata"] = {"inline": [idp_metadata]}
        from saml2.config import SPConfig

        config = SPConfig()
        config.load(settings)
        return config

    def _client(self, idp_metadata: str) -> Saml2Client:
        from saml2.client import Saml2Client

        if not idp_metadata:
            raise refused("idp_metadata_invalid")
        return Saml2Client(config=self._config(idp_metadata))

    def metadata(self) -> str:
        """Our SP metadata (entity ID, ACS, signed assertions wanted), for the IdP."""
        from saml2.metadata import entity_descriptor

        # (without xmlsec1, pysaml2 lists no algorithms, MD5 and SHA-1 among them)
        return str(entity_descriptor(self._config(None, checks=False)))

    def import_idp(self, idp_metadata: str) -> str:
        """The identity provider's entity ID, after checking that its metadata is one
        IdP with a signing certificate and an HTTP-Redirect sign-on endpoint."""
        try:
            client = self._client(idp_metadata)
            idps = list(client.metadata.identity_providers())
        except InvalidRequest:
            raise
        except Exception as exc:  # pysaml2's: SAMLError, TooOld, parse errors...
            raise _bad_metadata(
                f"it does not parse or has expired ({type(exc).__name__})"
            ) from None
        if len(idps) != 1:
            raise _bad_metadata(f"it describes {len(idps)} identity providers, not one")
        entity_id = idps[0]
        if not client.metadata.single_sign_on_service(entity_id, BINDING_HTTP_REDIRECT):
            raise _bad_metadata("it has no HTTP-Redirect SingleSignOnService")
        if not client.metadata.certs(entity_id, "idpsso", "signing"):
            raise _bad_metadata("it has no signing certificate")
        return str(entity_id)

    def authn_request(
        self, idp_metadata: str, idp_entity_id: str, relay_state: str
    ) -> tuple[str, str]:
        """The AuthnRequest's ID and the IdP URL that carries it (HTTP-Redirect)."""
        try:
            request_id, info = self._client(idp_metadata).prepare_for_authenticate(
                entityid=idp_entity_id,
                relay_state=relay_state,
                binding=BINDING_HTTP_REDIRECT,
                nameid_format=NAMEID_FORMAT_EMAILADDRESS,
            )
            location = dict(info["headers"])["Location"]
        except InvalidRequest:
            raise
        except Exception:  # metadata that expired since it was imported, or broke
            raise refused("idp_metadata_invalid") from None
        return str(request_id), str(location)

    def accepted(
        self, idp_metadata: str, idp_entity_id: str, saml_response: str, request_id: str
    ) -> SignedAssertion:
        """The posted ``SAMLResponse`` (base64), if every check passes; ``SsoRefused``
        with the failed check otherwise."""
        if len(saml_response) > MAX_RESPONSE_BYTES:
            raise refused("response_too_large")
        try:
            xml = base64.b64decode(saml_response, validate=True)
        except (binascii.Error, ValueError):
            raise refused("malformed_response") from None
        _plain_assertion_only(xml)
        try:
            client = self._client(idp_metadata)
        except Exception:
            raise refused("idp_metadata_invalid") from None
        try:
            response = client.parse_authn_request_response(
                saml_response, BINDING_HTTP_POST, outstanding={request_id: "/"}
            )
        except Exception as exc:  # pysaml2 raises bare Exceptions for some checks
            raise refused(_reason(exc)) from None
        from saml2.response import AuthnResponse

        if not isinstance(response, AuthnResponse) or response.assertion is None:
            raise refused("invalid_response")  # pysaml2's None: e.g. a wrong Destination
        return self._required(response, idp_entity_id, request_id)

    def _required(
        self, response: AuthnResponse, idp_entity_id: str, request_id: str
    ) -> SignedAssertion:
        assertion = response.assertion
        if response.in_response_to != request_id:
            raise refused("unsolicited_response")
        if assertion.signature is None:
            raise refused("unsigned_assertion")
        if _weak(assertion.signature):
            raise refused("weak_signature_algorithm")
        issuer = assertion.issuer.text.strip() if assertion.issuer is not None else None
        if issuer != idp_entity_id:
            raise refused("issuer_mismatch")
        conditions = assertion.conditions
        audiences = {
            a.text.strip()
            for r in (conditions.audience_restriction if conditions is not None else [])
            for a in r.audience
            if a.text
        }
        if self.entity_id not in audiences:
            raise refused("audience_mismatch")
        bearer = [
            c.subject_confirmation_data
            for c in assertion.subject.subject_confirmation
            if c.method == SCM_BEARER
        ]
        if not bearer or any(d is None for d in bearer):
            raise refused("no_bearer_confirmation")
        if any(d.recipient != self.acs_url for d in bearer):
            raise refused("recipient_mismatch")
        # the signed assertion itself answers our request (the Response around it is
        # not signed: its InResponseTo is the sender's word), and expires
        if any(d.in_response_to != request_id for d in bearer):
            raise refused("unsolicited_response")
        if any(not d.not_on_or_after for d in bearer):
            raise refused("no_expiry")
        return _person(response)


def _plain_assertion_only(xml: bytes) -> None:
    """One plain ``Assertion`` and nothing encrypted: we publish no encryption key, and
    pysaml2 skips its ``InResponseTo`` check for an assertion it found inside an
    ``EncryptedAssertion`` (a captured signed assertion could answer a new request)."""
    try:
        root = ElementTree.fromstring(xml)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        raise refused("malformed_response") from None
    names = [element.tag.rpartition("}")[2] for element in root.iter()]
    if "EncryptedAssertion" in names or "EncryptedID" in names or "EncryptedData" in names:
        raise refused("encrypted_content")
    if names.count("Assertion") != 1:
        raise refused("not_one_assertion")


def _person(response: AuthnResponse) -> SignedAssertion:
    name_id = response.assertion.subject.name_id
    subject = name_id.text.strip() if name_id is not None and name_id.text else ""
    if not subject:
        raise refused("no_subject")
    values: dict[str, list[str]] = {}
    for statement in response.assertion.attribute_statement:
        for attribute in statement.attribute:
            texts = [str(v.text).strip() for v in attribute.attribute_value if v.text]
            for key in (attribute.name, attribute.friendly_name):
                if key:
                    values.setdefault(key.lower(), []).extend(texts)

    def first(names: frozenset[str]) -> str | None:
        return next((v[0] for n, v in values.items() if n in names and v), None)

    email = first(EMAIL_ATTRIBUTES)
    if email is None and name_id is not None and name_id.format == NAMEID_FORMAT_EMAILADDRESS:
        email = subject
    groups = sorted({g for n, v in values.items() if n in GROUP_ATTRIBUTES for g in v})
    return SignedAssertion(subject, email, groups, first(NAME_ATTRIBUTES))


def _weak(signature: Any) -> bool:
    """SHA-1 (or MD5) in the signature or its digests: xmlsec1 would accept them."""
    info = signature.signed_info
    algorithms = [info.signature_method.algorithm] + [
        r.digest_method.algorithm for r in info.reference
    ]
    return any(a is None or a.endswith(("sha1", "md5")) for a in algorithms)


def _reason(exc: BaseException) -> str:
    """pysaml2's failure, as the check that failed."""
    from saml2.response import (
        IncorrectlySigned,
        StatusError,
        UnsolicitedResponse,
        VerificationError,
    )
    from saml2.sigver import SignatureError
    from saml2.validate import ResponseLifetimeExceed, ToEarly

    text = str(exc).lower()
    if isinstance(exc, (SignatureError, IncorrectlySigned)):
        return "unsigned_assertion" if "missing" in text else "bad_signature"
    if isinstance(exc, UnsolicitedResponse):
        return "unsolicited_response"
    if isinstance(exc, (ResponseLifetimeExceed, ToEarly)):
        return "expired_assertion"
    if isinstance(exc, StatusError):
        return "provider_error"
    if "audience" in text:
        return "audience_mismatch"
    if isinstance(exc, VerificationError) and "recipient" in text:
        return "recipient_mismatch"
    if "signature" in text or "signed" in text:
        return "bad_signature"
    return "invalid_response"


def _bad_metadata(why: str) -> InvalidRequest:
    return InvalidRequest(
        f"The identity provider's metadata was refused: {why}.",
        param="idp_metadata",
        code="invalid_idp_metadata",
    )
