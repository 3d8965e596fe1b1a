"""Personal values in audit entries, committed rather than held: an entry's hashed
content carries ``{"personal": <digest>}`` where the value was (the digest: SHA-256 of a
random salt and the value), and the value waits in ``audit_personal``. Reading an entry
puts the values back; erasing a person deletes their values, which then read as
``"[erased]"``, and every hash in the chain still matches: it never covered them.

Entries written before this existed hold their values in the hashed content: erasing
those would break the chain, so they keep them (docs/architecture.md)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from forge.db.schema import AuditPersonal

PERSONAL_KEYS = frozenset({"email", "ip_address", "source_ip", "user_agent"})
ERASED = "[erased]"


def commit(content: dict[str, Any], entry_id: str) -> tuple[dict[str, Any], list[AuditPersonal]]:
    """``content`` with its personal values replaced by digests, and the rows that keep
    the values."""
    kept: list[AuditPersonal] = []

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in PERSONAL_KEYS and isinstance(value, str) and value:
                    salt = secrets.token_hex(16)
                    digest = hashlib.sha256((salt + value).encode()).hexdigest()
                    kept.append(
                        AuditPersonal(digest=digest, entry_id=entry_id, value=value, salt=salt)
                    )
                    out[key] = {"personal": digest}
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(content), kept


def digests(content: Any) -> set[str]:
    """The digests a committed entry refers to."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"personal"} and isinstance(node["personal"], str):
                found.add(node["personal"])
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(content)
    return found


def reveal(content: Any, values: dict[str, str]) -> Any:
    """The entry as written, its erased values as ``"[erased]"``."""
    if isinstance(content, dict):
        if set(content) == {"personal"} and isinstance(content["personal"], str):
            return values.get(content["personal"], ERASED)
        return {key: reveal(value, values) for key, value in content.items()}
    if isinstance(content, list):
        return [reveal(item, values) for item in content]
    return content
