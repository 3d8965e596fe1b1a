"""Passwords: Argon2id hashes (argon2-cffi, its RFC 9106 low-memory profile) and the
policy a new one must meet. Checking an unknown email's password costs the same as a
known one's (``verify`` against a fixed hash), so timing tells nothing."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from forge.errors import InvalidRequest

_HASHER = PasswordHasher()  # Argon2id, t=3, m=64 MiB, p=4 (RFC 9106's second choice)
_UNKNOWN = _HASHER.hash("an account that does not exist has this password")
MAX_LENGTH = 1024  # a longer one is refused before hashing: no hashing-cost attack
COMMON = frozenset(
    {
        "password1234",
        "123456789012",
        "qwertyuiopas",
        "passwordpassword",
        "letmeinletmein",
        "welcome12345",
        "iloveyou1234",
        "administrator",
        "changeme1234",
    }
)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (None: no such account or no password,
    checked against a fixed hash all the same)."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored or _UNKNOWN, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Hashed with older parameters than today's (rehashed at the next login)."""
    return _HASHER.check_needs_rehash(stored)


def check_policy(password: str, email: str, min_length: int) -> None:
    """A 400 naming what is wrong: too short or long, one repeated character, a common
    password, or the email's name in it."""
    problem = None
    lowered = password.lower()
    if len(password) < min_length:
        problem = f"at least {min_length} characters"
    elif len(password) > MAX_LENGTH:
        problem = f"at most {MAX_LENGTH} characters"
    elif len(set(password)) < 4:
        problem = "more than three different characters"
    elif lowered in COMMON:
        problem = "not a commonly used password"
    elif len(name := email.split("@")[0].lower()) >= 4 and name in lowered:
        problem = "not your email's name"
    if problem is not None:
        raise InvalidRequest(
            f"The password must have {problem}.", param="password", code="weak_password"
        )
