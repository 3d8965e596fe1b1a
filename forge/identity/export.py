"""A person's data, exported (GDPR article 15/20): a zip of their account, their
memberships, sessions, the metadata of the keys their users own (never a key itself),
the usage of those keys, and the audit entries about them or by them."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.audit.store import AuditStore
from forge.db.schema import (
    Account,
    ApiKey,
    AuditLogEntry,
    AuthSession,
    Group,
    GroupMember,
    Organization,
    UsageRecord,
    User,
    as_utc,
)
from forge.identity.compliance import as_csv

USAGE_FIELDS = ("request_id", "created_at", "key_id", "project_id", "endpoint", "model",
                "prompt_tokens", "completion_tokens", "cost_usd", "status")  # fmt: skip


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return as_utc(when).isoformat()


async def export_account(sessions: async_sessionmaker[AsyncSession], account: Account) -> bytes:
    """The zip's bytes (JSON files, and the usage as CSV)."""
    async with sessions() as s:
        users = list(await s.scalars(select(User).where(User.email == account.email)))
        user_ids = [u.id for u in users]
        orgs = {
            o.id: o.name
            for o in await s.scalars(
                select(Organization).where(Organization.id.in_([u.org_id for u in users]))
            )
        }
        groups = (
            await s.execute(
                select(GroupMember.user_id, Group.name)
                .join(Group, Group.id == GroupMember.group_id)
                .where(GroupMember.user_id.in_(user_ids))
            )
        ).all()
        sessions_rows = list(
            await s.scalars(select(AuthSession).where(AuthSession.account_id == account.id))
        )
        keys = list(
            await s.scalars(
                select(ApiKey).where(ApiKey.owner_type == "user", ApiKey.owner_id.in_(user_ids))
            )
        )
        usage = list(
            await s.scalars(
                select(UsageRecord)
                .where(UsageRecord.key_id.in_([k.id for k in keys]))
                .order_by(UsageRecord.created_at)
            )
        )
        log = AuditStore(sessions)
        mentioned = await log.mentioning([account.email])
        about = [account.id, *user_ids]
        entries = list(
            await s.scalars(
                select(AuditLogEntry)
                .where(
                    or_(
                        AuditLogEntry.actor_id.in_(about),
                        AuditLogEntry.id.in_(mentioned),
                        *(AuditLogEntry.content.contains(u) for u in user_ids),
                    )
                )
                .order_by(AuditLogEntry.seq)
            )
        )
        audit = await log.revealed(entries)
    files: dict[str, Any] = {
        "account.json": {
            "id": account.id,
            "email": account.email,
            "email_verified_at": _iso(account.email_verified_at),
            "mfa_enabled": account.totp_enabled_at is not None,
            "created_at": _iso(account.created_at),
        },
        "memberships.json": [
            {
                "organization": {"id": u.org_id, "name": orgs.get(u.org_id)},
                "user_id": u.id,
                "name": u.name,
                "role": u.role,
                "active": u.active,
                "groups": [name for uid, name in groups if uid == u.id],
                "created_at": _iso(u.created_at),
            }
            for u in users
        ],
        "sessions.json": [
            {
                "id": r.id,
                "organization": r.org_id,
                "created_at": _iso(r.created_at),
                "last_seen_at": _iso(r.last_seen_at),
                "revoked_at": _iso(r.revoked_at),
                "source_ip": r.source_ip,
                "user_agent": r.user_agent,
            }
            for r in sessions_rows
        ],
        "api_keys.json": [
            {
                "id": k.id,
                "name": k.name,
                "prefix": k.prefix,
                "project_id": k.project_id,
                "created_at": _iso(k.created_at),
                "revoked_at": _iso(k.revoked_at),
            }
            for k in keys
        ],
        "audit_log.json": audit,
    }
    rows = [
        {f: _iso(v) if isinstance(v := getattr(r, f), datetime) else v for f in USAGE_FIELDS}
        for r in usage
    ]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, json.dumps(content, indent=2, ensure_ascii=False))
        archive.writestr("usage.csv", as_csv(rows))
    return out.getvalue()
