"""The relay's side of bring-your-own-key: the plaintext key for one request, opened from
the sealed values the caller's verified key carries, and kept nowhere."""

from __future__ import annotations

from collections.abc import Iterable

from forge.credentials.sealing import Keyring, SealError
from forge.credentials.store import context_of
from forge.errors import ServiceUnavailable
from forge.keys import KeyInfo


class CredentialOpener:
    def __init__(self, keyring: Keyring, keyed_providers: Iterable[str]) -> None:
        self._keyring = keyring
        self._keyed = frozenset(keyed_providers)

    def api_key(self, key: KeyInfo | None, provider: str) -> str | None:
        """The project's own key for ``provider``; None: the platform's key is used.

        A project that set its own key never falls back to the platform's silently: a
        value that does not open (its keyring key was removed) is a 503 saying so."""
        if key is None or not key.credentials or provider not in self._keyed:
            return None
        sealed = key.credentials.get(provider)
        if sealed is None:
            return None
        try:
            return self._keyring.open(sealed, context_of(key.project_id, provider))
        except SealError as exc:
            raise ServiceUnavailable(
                f"The project's own key for provider {provider!r} cannot be opened ({exc}); "
                "the platform operator must restore its encryption key, or the project set "
                "the key again.",
                code="provider_credential_unreadable",
            ) from None
