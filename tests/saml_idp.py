"""A SAML 2.0 identity provider for the tests: pysaml2's own IdP (``saml2.server.Server``)
served over HTTP on loopback, with a key and certificate made here. It signs in whoever
``person`` names (the tests are the user at its login page) and answers an AuthnRequest
(HTTP-Redirect) with a Response form (HTTP-POST), as Okta, Entra or Shibboleth do.
``sign_assertion`` and ``audience`` let a test make it misbehave."""

from __future__ import annotations

import datetime
import html
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAME_FORMAT_BASIC, NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server

from forge.identity.saml import xmlsec_binary

RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"


@dataclass
class Person:
    email: str
    groups: list[str] = field(default_factory=list)
    name: str = "Kay"


def key_pair(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A 2048-bit RSA key and its self-signed certificate, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = directory / f"{common_name}.key", directory / f"{common_name}.crt"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


class IdentityProvider:
    def __init__(self, directory: Path, name: str = "idp") -> None:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self.entity_id = self.url + "/metadata"
        self.key_file, self.cert_file = key_pair(directory, name)
        self.person = Person("kay@acme.test")
        self.sign_assertion = True
        self.audience: str | None = None  # another service provider's entity ID
        self.sign_alg, self.digest_alg = RSA_SHA256, SHA256
        self._server: Server | None = None

    def trust(self, sp_metadata: str) -> None:
        """Load the service provider's metadata (as an IdP admin registers an app)."""
        config = IdPConfig()
        config.load(
            {
                "entityid": self.entity_id,
                "xmlsec_binary": xmlsec_binary(),
                "key_file": str(self.key_file),
                "cert_file": str(self.cert_file),
                "allow_unknown_attributes": True,
                "service": {
                    "idp": {
                        "endpoints": {
                            "single_sign_on_service": [
                                (self.url + "/sso/redirect", BINDING_HTTP_REDIRECT)
                            ]
                        },
                        "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                        "policy": {
                            "default": {
                                "lifetime": {"minutes": 5},
                                "attribute_restrictions": None,
                                "name_form": NAME_FORMAT_BASIC,
                            }
                        },
                    }
                },
                "metadata": {"inline": [sp_metadata]},
            }
        )
        self._server = Server(config=config)

    def metadata(self) -> str:
        assert self._server is not None, "trust() the service provider first"
        return str(entity_descriptor(self._server.config))

    def start(self) -> None:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def answer(self, saml_request: str, relay_state: str) -> str:
        """The auto-submitting form a browser gets back after signing in."""
        assert self._server is not None
        request = self._server.parse_authn_request(saml_request, BINDING_HTTP_REDIRECT)
        args: dict[str, Any] = self._server.response_args(request.message)
        if self.audience is not None:
            args["sp_entity_id"] = self.audience
        person = self.person
        response = self._server.create_authn_response(
            {"mail": [person.email], "groups": person.groups, "displayName": [person.name]},
            userid=person.email,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=person.email),
            authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"},
            sign_assertion=self.sign_assertion,
            sign_response=False,
            sign_alg=self.sign_alg,
            digest_alg=self.digest_alg,
            **args,
        )
        bound = self._server.apply_binding(
            BINDING_HTTP_POST, str(response), args["destination"], relay_state, response=True
        )
        return str(bound["data"])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/metadata":
                    self._send(200, idp.metadata(), "application/samlmetadata+xml")
                elif url.path == "/sso/redirect":
                    query = {k: v[0] for k, v in parse_qs(url.query).items()}
                    page = idp.answer(query["SAMLRequest"], query.get("RelayState", ""))
                    self._send(200, page, "text/html")
                else:
                    self._send(404, "not found", "text/plain")

            def _send(self, status: int, body: str, kind: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def posted_form(page: str) -> tuple[str, dict[str, str]]:
    """The action and fields of the IdP's auto-submitting form."""
    action = re.search(r'<form[^>]*action="([^"]+)"', page)
    assert action is not None, page
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
    return html.unescape(action.group(1)), {k: html.unescape(v) for k, v in fields.items()}
