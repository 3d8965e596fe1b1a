"""Compliance reports of an organisation, from its people, keys and audit trail: who holds
which role (and through what), API keys by age and last use, admin actions by actor and
event over a period, and failed logins. Each is a list of flat rows, so that the same
report answers as JSON or as CSV."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.audit.store import AuditStore
from forge.db.schema import (
    ApiKey,
    AuditLogEntry,
    CustomRole,
    Group,
    GroupMember,
    RoleAssignment,
    UsageRecord,
    User,
    as_utc,
    utcnow,
)
from forge.errors import InvalidRequest

Report = Literal["roles", "keys", "admin_actions", "failed_logins"]
REPORTS: tuple[Report, ...] = ("roles", "keys", "admin_actions", "failed_logins")
AUTH_EVENTS = ("login.", "logout.")


def _when(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat()


class ComplianceReports:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def report(
        self, name: str, org_id: str, start: int | None = None, end: int | None = None
    ) -> list[dict[str, Any]]:
        if name not in REPORTS:
            raise InvalidRequest(
                f"No report {name!r}: one of {', '.join(REPORTS)}.", param="report"
            )
        if name == "roles":
            return await self.roles(org_id)
        if name == "keys":
            return await self.keys(org_id)
        entries = await self._audit(org_id, start, end)
        if name == "admin_actions":
            return admin_actions(entries)
        return failed_logins(entries)

    async def roles(self, org_id: str) -> list[dict[str, Any]]:
        """A row per person and role they hold: their organisation role, and each custom
        role given to them or to a group of theirs (``via`` says which)."""
        async with self._sessions() as s:
            users = list(
                await s.scalars(select(User).where(User.org_id == org_id).order_by(User.email))
            )
            names = {
                r.id: r.name
                for r in await s.scalars(select(CustomRole).where(CustomRole.org_id == org_id))
            }
            groups = {
                g.id: g.name for g in await s.scalars(select(Group).where(Group.org_id == org_id))
            }
            member_of: dict[str, list[str]] = defaultdict(list)
            for m in await s.scalars(select(GroupMember).where(GroupMember.org_id == org_id)):
                member_of[m.user_id].append(m.group_id)
            given: dict[tuple[str, str], list[str]] = defaultdict(list)
            for a in await s.scalars(select(RoleAssignment).where(RoleAssignment.org_id == org_id)):
                given[(a.principal_type, a.principal_id)].append(a.role_id)
        rows = []
        for user in users:
            base = {"user_id": user.id, "email": user.email, "active": user.active}
            rows.append({**base, "role": user.role, "via": "organization"})
            for role in given[("user", user.id)]:
                rows.append({**base, "role": names.get(role, role), "via": "direct"})
            for group in member_of[user.id]:
                for role in given[("group", group)]:
                    via = f"group:{groups.get(group, group)}"
                    rows.append({**base, "role": names.get(role, role), "via": via})
        return rows

    async def keys(self, org_id: str) -> list[dict[str, Any]]:
        """Every API key with its age in days and last use (from the usage records),
        oldest first: the keys to rotate or revoke are at the top."""
        now = utcnow()
        async with self._sessions() as s:
            keys = list(
                await s.scalars(
                    select(ApiKey).where(ApiKey.org_id == org_id).order_by(ApiKey.created_at)
                )
            )
            used = dict(
                (
                    await s.execute(
                        select(UsageRecord.key_id, func.max(UsageRecord.created_at))
                        .where(UsageRecord.key_id.in_([k.id for k in keys]))
                        .group_by(UsageRecord.key_id)
                    )
                ).all()
            )
        rows = []
        for key in keys:
            created = as_utc(key.created_at)
            rows.append(
                {
                    "key_id": key.id,
                    "name": key.name,
                    "project_id": key.project_id,
                    "owner": f"{key.owner_type}:{key.owner_id}" if key.owner_type else None,
                    "role": key.role,
                    "created_at": _when(key.created_at),
                    "age_days": (now - created).days,
                    "last_used_at": _when(used.get(key.id)),
                    "revoked_at": _when(key.revoked_at),
                    "expires_at": _when(key.expires_at),
                }
            )
        return rows

    async def _audit(self, org_id: str, start: int | None, end: int | None) -> list[dict[str, Any]]:
        # entries retention made stubs are gone from reports as from the lists
        where: list[Any] = [AuditLogEntry.org_id == org_id, AuditLogEntry.purged_at.is_(None)]
        if start is not None:
            where.append(AuditLogEntry.effective_at >= start)
        if end is not None:
            where.append(AuditLogEntry.effective_at < end)
        async with self._sessions() as s:
            rows = list(
                await s.scalars(select(AuditLogEntry).where(*where).order_by(AuditLogEntry.seq))
            )
        return await AuditStore(self._sessions).revealed(rows)


def _actor(entry: dict[str, Any]) -> tuple[str, str]:
    actor = entry.get("actor") or {}
    kind = str(actor.get("type") or "unknown")
    inner = actor.get(kind) or {}
    who = (
        inner.get("user", {}).get("email")
        or inner.get("user", {}).get("id")
        or inner.get("id")
        or (inner.get("api_key") or {}).get("id")
        or kind
    )
    return kind, str(who)


def admin_actions(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per actor and event type: how many, first and last (logins left out: they are
    the failed-logins report's and the log's)."""
    grouped: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for entry in entries:
        event = str(entry.get("type"))
        if event.startswith(AUTH_EVENTS):
            continue
        kind, who = _actor(entry)
        grouped[(kind, who, event)].append(int(entry.get("effective_at") or 0))
    return [
        {
            "actor_type": kind,
            "actor": who,
            "event": event,
            "count": len(times),
            "first_at": min(times),
            "last_at": max(times),
        }
        for (kind, who, event), times in sorted(grouped.items())
    ]


def failed_logins(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for entry in entries:
        if entry.get("type") != "login.failed":
            continue
        details = entry.get("login.failed") or {}
        rows.append(
            {
                "at": entry.get("effective_at"),
                "email": details.get("email"),
                "method": details.get("method", "password"),
                "reason": details.get("reason"),
                "source_ip": entry.get("source_ip"),
            }
        )
    return rows


def as_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV, a header of the first row's keys (empty: no header)."""
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value: Any) -> Any:
    """A cell that a spreadsheet will not run as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
