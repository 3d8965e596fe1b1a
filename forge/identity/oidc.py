"""OpenID Connect, the relying party's side: discovery, the authorization request
(authorization code with PKCE S256 from ``authlib``, ``state`` and ``nonce``), the code
exchange, and the ID token's checks (its signature against the provider's JWKS, issuer,
audience, expiry, nonce: ``joserfc``, authlib's JOSE library). HTTP goes through
``httpx2``, the SDKs' client (authlib's own integration wants ``httpx``, a second copy).
A refusal names its reason (for the audit log), never the token."""

from __future__ import annotations

import time
from typing import Any, cast

import httpx2
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from forge.errors import AuthenticationFailed
from forge.ttl_cache import TtlCache

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
LEEWAY_S = 60
METADATA_TTL_S = 300.0
SCOPES = "openid email profile groups"


class SsoRefused(AuthenticationFailed):
    """A single sign-on that did not pass a check: 401, with ``reason`` for the log."""

    default_code = "sso_refused"
    reason = "refused"


def refused(reason: str, message: str | None = None) -> SsoRefused:
    """The refusal for the check ``reason`` (its words in the message)."""
    error = SsoRefused(message or f"Single sign-on refused: {reason.replace('_', ' ')}.")
    error.reason = reason
    return error


class OidcProvider:
    """One identity provider (by its issuer): discovery and keys cached a while."""

    def __init__(self, http: httpx2.AsyncClient | None = None) -> None:
        self._http = http or httpx2.AsyncClient(timeout=10.0)
        self._metadata: TtlCache[str, dict[str, Any]] = TtlCache(100)
        self._keys: TtlCache[str, dict[str, Any]] = TtlCache(100)

    async def metadata(self, issuer: str) -> dict[str, Any]:
        """The provider's discovery document; its ``issuer`` must be the one configured
        (OpenID Connect Discovery 1.0, section 4.3)."""
        found = self._metadata.get(issuer)
        if found is not None:
            return found
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            answer = await self._http.get(url)
            answer.raise_for_status()
            document: dict[str, Any] = answer.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise refused(
                "discovery_failed",
                f"The identity provider's discovery failed: {type(exc).__name__}.",
            ) from None
        if document.get("issuer") != issuer:
            raise refused("issuer_mismatch")
        self._metadata.put(issuer, document, METADATA_TTL_S)
        return document

    async def key_set(self, metadata: dict[str, Any], refresh: bool = False) -> dict[str, Any]:
        uri = str(metadata["jwks_uri"])
        found = None if refresh else self._keys.get(uri)
        if found is None:
            answer = await self._http.get(uri)
            answer.raise_for_status()
            found = answer.json()
            self._keys.put(uri, found, METADATA_TTL_S)
        return found

    def authorization_url(
        self,
        metadata: dict[str, Any],
        client_id: str,
        redirect_uri: str,
        state: str,
        nonce: str,
        verifier: str,
    ) -> str:
        supported = metadata.get("scopes_supported") or ["groups"]
        params = [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", SCOPES if "groups" in supported else "openid email profile"),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", create_s256_code_challenge(verifier)),
            ("code_challenge_method", "S256"),
        ]
        return str(add_params_to_uri(metadata["authorization_endpoint"], params))

    async def exchange(
        self,
        metadata: dict[str, Any],
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        code: str,
        verifier: str,
    ) -> dict[str, Any]:
        """The token response for ``code`` (with the PKCE verifier)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        try:
            answer = await self._http.post(
                metadata["token_endpoint"], data=form, auth=(client_id, client_secret)
            )
            token: dict[str, Any] = answer.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise refused(
                "code_exchange_failed", f"The code exchange failed: {type(exc).__name__}."
            ) from None
        if answer.status_code != 200 or "id_token" not in token:
            why = token.get("error", answer.status_code)
            raise refused("code_exchange_failed", f"The identity provider refused the code: {why}.")
        return token

    async def verified_claims(
        self, metadata: dict[str, Any], id_token: str, client_id: str, nonce: str
    ) -> dict[str, Any]:
        """The ID token's claims once every check passed (keys fetched again once if
        the token names one the cached set lacks: a rotation)."""
        keys = await self.key_set(metadata)
        try:
            return check_id_token(id_token, keys, metadata["issuer"], client_id, nonce)
        except SsoRefused as failed:
            if failed.reason != "bad_signature":
                raise
        return check_id_token(
            id_token,
            await self.key_set(metadata, refresh=True),
            metadata["issuer"],
            client_id,
            nonce,
        )

    async def user_info(
        self, metadata: dict[str, Any], access_token: str, subject: str
    ) -> dict[str, Any]:
        """The UserInfo claims (where a provider puts email and groups when it issues an
        access token), which must be about the ID token's subject (OIDC Core 5.3.2)."""
        endpoint = metadata.get("userinfo_endpoint")
        if not endpoint:
            return {}
        try:
            answer = await self._http.get(
                endpoint, headers={"authorization": f"Bearer {access_token}"}
            )
            answer.raise_for_status()
            claims: dict[str, Any] = answer.json()
        except (httpx2.HTTPError, ValueError):
            raise refused("userinfo_failed") from None
        if claims.get("sub") != subject:
            raise refused("userinfo_subject_mismatch")
        return claims

    async def close(self) -> None:
        await self._http.aclose()


def check_id_token(
    id_token: str,
    jwks: dict[str, Any],
    issuer: str,
    client_id: str,
    nonce: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of ``id_token`` if it is signed by a key of ``jwks`` with an allowed
    algorithm, issued by ``issuer`` for ``client_id`` (and, with several audiences,
    authorised to it), unexpired, and carries ``nonce``; else ``SsoRefused``."""
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(cast(Any, jwks)), algorithms=ALGORITHMS)
    except BadSignatureError:
        raise refused("bad_signature") from None
    except JoseError:
        raise refused("malformed_id_token") from None
    claims = dict(token.claims)
    registry = JWTClaimsRegistry(
        now=int(now if now is not None else time.time()),
        leeway=LEEWAY_S,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        nonce={"essential": True, "value": nonce},
        exp={"essential": True},
        sub={"essential": True},
    )
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise refused("expired_id_token") from None
    except (InvalidClaimError, MissingClaimError) as exc:
        claim = getattr(exc, "claim", "claim")
        raise refused(f"invalid_{claim}") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise refused("invalid_azp")
    return claims
