"""SCIM 2.0 provisioning (RFC 7643 resources, RFC 7644 protocol) of an organisation's
people and groups, as Okta and Microsoft Entra drive it: create, replace, PATCH (with or
without a ``path``, Entra's capitalised ops and string booleans), ``filter=attr eq
"value"``, ``startIndex``/``count`` pages, delete. Users are the organisation's ``users``
rows (``userName`` is the email), groups its ``groups`` (their roles reach members as on
the Admin API). Deactivating someone ends their sessions and revokes their keys at once.
Errors are SCIM's shape (``urn:ietf:params:scim:api:messages:2.0:Error``)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import ApiKey, Group, GroupMember, ScimToken, User, as_utc, utcnow
from forge.identity.objects import EMAIL

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
MAX_COUNT = 200
OPERATORS = ("eq", "ne", "co", "sw", "ew", "pr", "gt", "ge", "lt", "le")
USER_FILTERS = {"username": User.email, "externalid": User.external_id, "id": User.id}
GROUP_FILTERS = {"displayname": Group.name, "externalid": Group.external_id, "id": Group.id}


class ScimError(Exception):
    """An answer in SCIM's error shape (RFC 7644 3.12)."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemas": [ERROR_SCHEMA],
            "status": str(self.status),
            "detail": self.detail,
        }
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


# -- filters ------------------------------------------------------------------------------

_FILTER = re.compile(r'^\s*([A-Za-z][\w.]*)\s+([A-Za-z]+)\s+"((?:[^"\\]|\\.)*)"\s*$')


def parse_filter(text: str, allowed: dict[str, Any]) -> tuple[Any, str]:
    """``attr eq "value"`` → (the column, the value). Another operator, an attribute
    that cannot be filtered on, or anything else: 400 ``invalidFilter``."""
    match = _FILTER.match(text)
    if match is None:
        raise ScimError(400, f"Malformed filter: {text[:100]!r}.", "invalidFilter")
    attribute, operator, value = match.group(1), match.group(2).lower(), match.group(3)
    if operator not in OPERATORS:
        raise ScimError(400, f"Unknown operator {operator!r}.", "invalidFilter")
    if operator != "eq":
        raise ScimError(
            400, f"The operator {operator!r} is not supported; use eq.", "invalidFilter"
        )
    column = allowed.get(attribute.lower())
    if column is None:
        raise ScimError(400, f"Cannot filter on {attribute!r}.", "invalidFilter")
    return column, json.loads(f'"{value}"')


def page_bounds(start_index: int | None, count: int | None) -> tuple[int, int]:
    """RFC 7644 3.4.2.4: 1-based ``startIndex`` (below 1 means 1), ``count`` (negative
    means 0), capped."""
    start = max(1, start_index or 1)
    size = MAX_COUNT if count is None else max(0, min(count, MAX_COUNT))
    return start, size


def list_response(resources: list[dict[str, Any]], total: int, start: int) -> dict[str, Any]:
    return {
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


# -- PATCH --------------------------------------------------------------------------------


def operations(body: dict[str, Any]) -> list[tuple[str, str | None, Any]]:
    """(op, path, value) of a PatchOp, ops lower-cased (Entra sends ``Replace``)."""
    if PATCH_SCHEMA not in (body.get("schemas") or [PATCH_SCHEMA]):
        raise ScimError(400, "Not a PatchOp request.", "invalidSyntax")
    ops = body.get("Operations") or body.get("operations")
    if not isinstance(ops, list) or not ops:
        raise ScimError(400, "A PatchOp needs Operations.", "invalidSyntax")
    out = []
    for op in ops:
        if not isinstance(op, dict) or str(op.get("op", "")).lower() not in (
            "add",
            "replace",
            "remove",
        ):
            raise ScimError(400, f"Unsupported operation: {str(op)[:100]}.", "invalidSyntax")
        path = op.get("path")
        out.append(
            (str(op["op"]).lower(), path if isinstance(path, str) else None, op.get("value"))
        )
    return out


def as_bool(value: Any) -> bool:
    """SCIM booleans as Entra sends them too (``"False"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ScimError(400, f"Not a boolean: {value!r}.", "invalidValue")


_MEMBER_PATH = re.compile(r'^members\[value eq "([^"]+)"\]$', re.IGNORECASE)


# -- the store ----------------------------------------------------------------------------


@dataclass
class Changed:
    """What a change did beyond its rows: keys revoked and users deactivated, for the
    gateway to tell the replicas and end sessions."""

    revoked_keys: list[str]
    deactivated: list[str]


NOTHING = Changed([], [])  # a change with no keys or sessions to end (a group's)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ScimStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], base_url: str) -> None:
        self._sessions = sessions
        self.base_url = base_url.rstrip("/") + "/scim/v2"

    # tokens

    async def new_token(self, org_id: str) -> tuple[ScimToken, str]:
        token = "scim_" + secrets.token_urlsafe(32)
        row = ScimToken(
            id="scimtok_" + secrets.token_hex(10),
            org_id=org_id,
            token_hash=token_digest(token),
            created_at=utcnow(),
        )
        async with self._sessions.begin() as s:
            s.add(row)
        return row, token

    async def tokens(self, org_id: str) -> list[ScimToken]:
        async with self._sessions() as s:
            rows = await s.scalars(
                select(ScimToken)
                .where(ScimToken.org_id == org_id, ScimToken.revoked_at.is_(None))
                .order_by(ScimToken.created_at)
            )
            return list(rows)

    async def revoke_token(self, org_id: str, token_id: str) -> bool:
        async with self._sessions.begin() as s:
            done = await s.execute(
                update(ScimToken)
                .where(ScimToken.id == token_id, ScimToken.org_id == org_id)
                .values(revoked_at=utcnow())
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    async def org_of(self, token: str | None) -> str:
        """The organisation a bearer token provisions (401 otherwise)."""
        if not token:
            raise ScimError(401, "A SCIM bearer token is required.")
        async with self._sessions.begin() as s:
            row = await s.scalar(
                select(ScimToken).where(ScimToken.token_hash == token_digest(token))
            )
            if row is None or row.revoked_at is not None:
                raise ScimError(401, "Invalid SCIM token.")
            row.last_used_at = utcnow()
            return row.org_id

    # users

    async def list_users(
        self, org_id: str, filter_: str | None, start: int, count: int
    ) -> dict[str, Any]:
        where: list[Any] = [User.org_id == org_id]
        if filter_:
            column, value = parse_filter(filter_, USER_FILTERS)
            where.append(
                func.lower(column) == value.lower() if column is User.email else column == value
            )
        async with self._sessions() as s:
            total = await s.scalar(select(func.count()).select_from(User).where(*where)) or 0
            rows = list(
                await s.scalars(
                    select(User).where(*where).order_by(User.created_at, User.id)
                    .offset(start - 1).limit(count)
                )
            )  # fmt: skip
            return list_response([await self._user(s, r) for r in rows], total, start)

    async def get_user(self, org_id: str, user_id: str) -> dict[str, Any]:
        async with self._sessions() as s:
            return await self._user(s, await _user_row(s, org_id, user_id))

    async def create_user(self, org_id: str, body: dict[str, Any]) -> dict[str, Any]:
        email = _user_name(body)
        async with self._sessions.begin() as s:
            taken = await s.scalar(select(User).where(User.org_id == org_id, User.email == email))
            if taken is not None:
                raise ScimError(409, f"A user {email!r} exists already.", "uniqueness")
            row = User(
                id="user-" + secrets.token_hex(12),
                org_id=org_id,
                email=email,
                role="reader",
                created_at=utcnow(),
                active=True,
            )
            _apply_user(row, body)
            s.add(row)
            await s.flush()
            return await self._user(s, row)

    async def replace_user(
        self, org_id: str, user_id: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], Changed]:
        async with self._sessions.begin() as s:
            row = await _user_row(s, org_id, user_id)
            row.email = _user_name(body)
            row.external_id = row.given_name = row.family_name = None
            was_active = row.active
            row.active = True
            _apply_user(row, body)
            changed = await _deactivation(s, row, was_active)
            return await self._user(s, row), changed

    async def patch_user(
        self, org_id: str, user_id: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], Changed]:
        ops = operations(body)
        async with self._sessions.begin() as s:
            row = await _user_row(s, org_id, user_id)
            was_active = row.active
            for op, path, value in ops:
                if path is None:
                    if not isinstance(value, dict):
                        raise ScimError(
                            400,
                            "An operation without a path needs an object value.",
                            "invalidValue",
                        )
                    _apply_user(row, value)
                elif op == "remove":
                    _set_user_path(row, path, None)
                else:
                    _set_user_path(row, path, value)
            changed = await _deactivation(s, row, was_active)
            return await self._user(s, row), changed

    async def delete_user(self, org_id: str, user_id: str) -> Changed:
        async with self._sessions.begin() as s:
            row = await _user_row(s, org_id, user_id)
            keys = await _revoke_keys(s, row)
            await s.execute(delete(GroupMember).where(GroupMember.user_id == row.id))
            await s.delete(row)
        return Changed(keys, [user_id])

    async def _user(self, s: AsyncSession, row: User) -> dict[str, Any]:
        groups = (
            await s.execute(
                select(Group.id, Group.name)
                .join(GroupMember, GroupMember.group_id == Group.id)
                .where(GroupMember.user_id == row.id)
            )
        ).all()
        formatted = " ".join(p for p in (row.given_name, row.family_name) if p) or None
        resource: dict[str, Any] = {
            "schemas": [USER_SCHEMA],
            "id": row.id,
            "userName": row.email,
            "name": {
                "givenName": row.given_name,
                "familyName": row.family_name,
                "formatted": formatted,
            },
            "displayName": row.name,
            "emails": [{"value": row.email, "type": "work", "primary": True}],
            "active": row.active,
            "groups": [{"value": g, "display": n} for g, n in groups],
            "meta": _meta(
                "User", row.created_at, row.updated_at, f"{self.base_url}/Users/{row.id}"
            ),
        }
        if row.external_id is not None:
            resource["externalId"] = row.external_id
        return resource

    # groups

    async def list_groups(
        self, org_id: str, filter_: str | None, start: int, count: int
    ) -> dict[str, Any]:
        where: list[Any] = [Group.org_id == org_id]
        if filter_:
            column, value = parse_filter(filter_, GROUP_FILTERS)
            where.append(column == value)
        async with self._sessions() as s:
            total = await s.scalar(select(func.count()).select_from(Group).where(*where)) or 0
            rows = list(
                await s.scalars(
                    select(Group).where(*where).order_by(Group.created_at, Group.id)
                    .offset(start - 1).limit(count)
                )
            )  # fmt: skip
            return list_response([await self._group(s, r) for r in rows], total, start)

    async def get_group(self, org_id: str, group_id: str) -> dict[str, Any]:
        async with self._sessions() as s:
            return await self._group(s, await _group_row(s, org_id, group_id))

    async def create_group(self, org_id: str, body: dict[str, Any]) -> dict[str, Any]:
        name = _display_name(body)
        async with self._sessions.begin() as s:
            if await s.scalar(select(Group).where(Group.org_id == org_id, Group.name == name)):
                raise ScimError(409, f"A group {name!r} exists already.", "uniqueness")
            row = Group(
                id="group_" + secrets.token_hex(12),
                org_id=org_id,
                name=name,
                external_id=body.get("externalId"),
                created_at=utcnow(),
            )
            s.add(row)
            await s.flush()
            await self._set_members(s, row, _member_ids(body.get("members")))
            return await self._group(s, row)

    async def replace_group(
        self, org_id: str, group_id: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], Changed]:
        async with self._sessions.begin() as s:
            row = await _group_row(s, org_id, group_id)
            row.name = _display_name(body)
            row.external_id = body.get("externalId")
            await self._set_members(s, row, _member_ids(body.get("members")))
            return await self._group(s, row), NOTHING

    async def patch_group(
        self, org_id: str, group_id: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], Changed]:
        ops = operations(body)
        async with self._sessions.begin() as s:
            row = await _group_row(s, org_id, group_id)
            members = set(
                await s.scalars(select(GroupMember.user_id).where(GroupMember.group_id == row.id))
            )
            for op, path, value in ops:
                member = _MEMBER_PATH.match(path or "")
                lowered = (path or "").lower()
                if member is not None and op == "remove":
                    members.discard(member.group(1))
                elif lowered == "members":
                    ids = set(_member_ids(value)) if value is not None else set()
                    if op == "add":
                        members |= ids
                    elif op == "remove":
                        members = members - ids if value is not None else set()
                    else:
                        members = ids
                elif lowered == "displayname" and op != "remove":
                    row.name = _text(value, "displayName")
                elif lowered == "externalid":
                    row.external_id = None if op == "remove" else _text(value, "externalId")
                elif path is None and isinstance(value, dict):
                    if "displayName" in value:
                        row.name = _text(value["displayName"], "displayName")
                    if "externalId" in value:
                        row.external_id = value["externalId"]
                    if "members" in value:
                        ids = set(_member_ids(value["members"]))
                        members = members | ids if op == "add" else ids
                else:
                    raise ScimError(400, f"Cannot {op} {path!r} on a group.", "invalidPath")
            await self._set_members(s, row, sorted(members))
            return await self._group(s, row), NOTHING

    async def delete_group(self, org_id: str, group_id: str) -> Changed:
        async with self._sessions.begin() as s:
            row = await _group_row(s, org_id, group_id)
            await s.execute(delete(GroupMember).where(GroupMember.group_id == row.id))
            await s.delete(row)
        return NOTHING

    async def _set_members(self, s: AsyncSession, group: Group, user_ids: list[str]) -> None:
        if user_ids:
            found = set(
                await s.scalars(
                    select(User.id).where(User.org_id == group.org_id, User.id.in_(user_ids))
                )
            )
            unknown = [u for u in user_ids if u not in found]
            if unknown:
                raise ScimError(
                    400, f"No user {unknown[0]!r} in this organisation.", "invalidValue"
                )
        await s.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
        s.add_all(
            GroupMember(group_id=group.id, user_id=u, org_id=group.org_id, created_at=utcnow())
            for u in dict.fromkeys(user_ids)
        )
        await s.flush()

    async def _group(self, s: AsyncSession, row: Group) -> dict[str, Any]:
        members = (
            await s.execute(
                select(User.id, User.email)
                .join(GroupMember, GroupMember.user_id == User.id)
                .where(GroupMember.group_id == row.id)
                .order_by(User.email)
            )
        ).all()
        resource: dict[str, Any] = {
            "schemas": [GROUP_SCHEMA],
            "id": row.id,
            "displayName": row.name,
            "members": [{"value": u, "display": e} for u, e in members],
            "meta": _meta("Group", row.created_at, None, f"{self.base_url}/Groups/{row.id}"),
        }
        if row.external_id is not None:
            resource["externalId"] = row.external_id
        return resource


# -- helpers ------------------------------------------------------------------------------


async def _user_row(s: AsyncSession, org_id: str, user_id: str) -> User:
    row = await s.get(User, user_id)
    if row is None or row.org_id != org_id:
        raise ScimError(404, f"No user {user_id!r}.")
    return row


async def _group_row(s: AsyncSession, org_id: str, group_id: str) -> Group:
    row = await s.get(Group, group_id)
    if row is None or row.org_id != org_id:
        raise ScimError(404, f"No group {group_id!r}.")
    return row


def _text(value: Any, name: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ScimError(
            400, f"{name} must be a non-empty string of at most {limit}.", "invalidValue"
        )
    return value.strip()


def _user_name(body: dict[str, Any]) -> str:
    email = _text(body.get("userName"), "userName", 320).lower()
    if not re.match(EMAIL, email):
        raise ScimError(400, "userName must be the person's email address.", "invalidValue")
    return email


def _display_name(body: dict[str, Any]) -> str:
    return _text(body.get("displayName"), "displayName")


def _member_ids(members: Any) -> list[str]:
    if members is None:
        return []
    if not isinstance(members, list) or not all(
        isinstance(m, dict) and isinstance(m.get("value"), str) for m in members
    ):
        raise ScimError(400, 'members is a list of {"value": "<user id>"}.', "invalidValue")
    return [m["value"] for m in members]


def _apply_user(row: User, body: dict[str, Any]) -> None:
    """The attributes of a full (PUT, POST) or partial (PATCH without a path) user."""
    for key, value in body.items():
        if key in ("schemas", "id", "meta", "groups", "password"):
            continue
        _set_user_path(row, key, value, strict=False)
    row.updated_at = utcnow()


def _set_user_path(row: User, path: str, value: Any, strict: bool = True) -> None:
    lowered = path.lower()
    if lowered == "active":
        row.active = as_bool(value) if value is not None else False
    elif lowered == "username":
        row.email = _user_name({"userName": value})
    elif lowered == "externalid":
        row.external_id = None if value is None else _text(value, "externalId")
    elif lowered == "displayname":
        row.name = None if value is None else _text(value, "displayName")
    elif lowered in ("name.givenname", "name.familyname"):
        text = None if value is None else _text(value, path)
        if lowered == "name.givenname":
            row.given_name = text
        else:
            row.family_name = text
    elif lowered == "name":
        if value is not None and not isinstance(value, dict):
            raise ScimError(400, "name must be an object.", "invalidValue")
        for part in ("givenName", "familyName"):
            if value is None or part in value:
                _set_user_path(row, f"name.{part}", None if value is None else value[part])
    elif lowered == "emails" or lowered.startswith("emails["):
        emails = value if isinstance(value, list) else [{"value": value}]
        primary = next((e for e in emails if isinstance(e, dict) and e.get("primary")), None)
        chosen = primary or (emails[0] if emails else None)
        if lowered.startswith("emails[") and isinstance(value, str):
            row.email = _user_name({"userName": value})
        elif isinstance(chosen, dict) and isinstance(chosen.get("value"), str) and strict:
            row.email = _user_name({"userName": chosen["value"]})
    elif strict:
        raise ScimError(400, f"Cannot set {path!r} on a user.", "invalidPath")
    row.updated_at = utcnow()


async def _revoke_keys(s: AsyncSession, row: User) -> list[str]:
    keys = list(
        await s.scalars(
            select(ApiKey.id).where(
                ApiKey.org_id == row.org_id,
                ApiKey.owner_type == "user",
                ApiKey.owner_id == row.id,
                ApiKey.revoked_at.is_(None),
            )
        )
    )
    if keys:
        await s.execute(update(ApiKey).where(ApiKey.id.in_(keys)).values(revoked_at=utcnow()))
    return keys


async def _deactivation(s: AsyncSession, row: User, was_active: bool) -> Changed:
    """A user just deactivated: their keys revoked (their sessions the caller ends)."""
    if was_active and not row.active:
        return Changed(await _revoke_keys(s, row), [row.id])
    return Changed([], [])


def _meta(kind: str, created: datetime, updated: datetime | None, location: str) -> dict[str, Any]:
    return {
        "resourceType": kind,
        "created": as_utc(created).isoformat(),
        "lastModified": as_utc(updated or created).isoformat(),
        "location": location,
    }
