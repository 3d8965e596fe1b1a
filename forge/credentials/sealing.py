"""AES-256-GCM sealing under a keyring of named keys, for secrets stored in the database.

A sealed value is ``<key id>:<base64url(nonce + ciphertext + tag)>``: the key id says which
key opens it, so keys rotate without a flag day (the newest seals, every key opens, and
``reseal`` moves old values to the newest). The ``context`` a value is sealed with (say,
the project and provider it belongs to) is authenticated data: a sealed value copied into
another row does not open there.

The keyring comes from ``FORGE_ENCRYPTION_KEYS`` (``id:base64key,...``, newest first); a
platform on its embedded defaults makes one key, once, in ``<data_dir>/encryption.keys``.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from forge.settings import Settings

NONCE_BYTES = 12
KEY_BYTES = 32
KEYS_FILE = "encryption.keys"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SealError(Exception):
    """A sealed value that this keyring cannot open (unknown key, tampered, wrong row)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key_entry(key_id: str | None = None) -> str:
    """A fresh ``id:base64key`` entry for ``FORGE_ENCRYPTION_KEYS``."""
    key_id = key_id or "k" + secrets.token_hex(4)
    return f"{key_id}:{_b64(AESGCM.generate_key(bit_length=KEY_BYTES * 8))}"


class Keyring:
    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError(f"the current key {current!r} is not in the keyring")
        for key_id, key in keys.items():
            if not _KEY_ID.match(key_id) or len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r}: ids are [A-Za-z0-9_-], keys 32 bytes")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """From ``id:base64key,id:base64key``, the first being the one that seals."""
        keys: dict[str, bytes] = {}
        for entry in (e.strip() for e in spec.split(",")):
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise ValueError("each encryption key is written id:base64key")
            try:
                keys[key_id] = _unb64(encoded)
            except ValueError:
                raise ValueError(f"encryption key {key_id!r} is not base64") from None
        if not keys:
            raise ValueError("no encryption key given")
        return cls(keys, next(iter(keys)))

    @classmethod
    def of(cls, settings: Settings) -> Keyring:
        """The operator's keyring, or the embedded default's key file (made once, 0600)."""
        if settings.encryption_keys is not None:
            return cls.parse(settings.encryption_keys.get_secret_value())
        path = settings.data_dir / KEYS_FILE
        if not path.exists():
            _write_private(path, new_key_entry("k1") + "\n")
        return cls.parse(path.read_text())

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.current}:{_b64(nonce + sealed)}"

    def open(self, sealed: str, context: str) -> str:
        key_id, _, encoded = sealed.partition(":")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SealError(f"sealed under key {key_id!r}, which the keyring does not hold")
        try:
            raw = _unb64(encoded)
            plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError):
            raise SealError(
                "a sealed value that does not open (altered, or another row's)"
            ) from None
        return plain.decode()

    def key_id_of(self, sealed: str) -> str:
        return sealed.partition(":")[0]

    def reseal(self, sealed: str, context: str) -> str:
        """The value sealed under the current key (as it is, if it already is)."""
        if self.key_id_of(sealed) == self.current:
            return sealed
        return self.seal(self.open(sealed, context), context)


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600) whole or not at all: written aside, then linked into
    place, so that replicas starting together all end up reading the one that won."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.link(aside, path)
    except FileExistsError:
        pass  # another process made it first: theirs stands
    finally:
        aside.unlink()
