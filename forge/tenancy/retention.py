"""Data retention per organisation and project, in OpenAI's shapes
(``organization.data_retention``, ``project.data_retention``), with what the platform
does for each:

- ``zero_data_retention`` (and ``enhanced_…``): no request or response body is kept:
  a Response is not stored (``store`` echoes false), no exchange is kept for learning
  from use, and what was kept before goes at the next purge.
- ``modified_abuse_monitoring`` (and ``enhanced_…``), a project's ``none``: bodies are
  kept ``body_retention_days`` (the organisation's; default: the platform's
  ``responses.retention_days``).
- a project's ``organization_default``: its organisation's.

Usage records are kept ``usage_retention_days`` and audit entries
``audit_retention_days`` (default: for ever); an audit entry past it becomes a stub
that keeps the chain verifiable (forge.audit.chain). A purge, run by every gateway
replica now and then, deletes what has outlived them.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.audit.store import AuditEvent, AuditStore
from forge.db.schema import (
    LearningExample,
    Organization,
    Project,
    StoredResponse,
    UsageRecord,
    utcnow,
)
from forge.errors import NotFound

OrgType = Literal[
    "zero_data_retention",
    "modified_abuse_monitoring",
    "enhanced_zero_data_retention",
    "enhanced_modified_abuse_monitoring",
]
ProjectType = Literal[
    "organization_default",
    "none",
    "zero_data_retention",
    "modified_abuse_monitoring",
    "enhanced_zero_data_retention",
    "enhanced_modified_abuse_monitoring",
]
ZERO = frozenset({"zero_data_retention", "enhanced_zero_data_retention"})
DAYS = Field(None, ge=1, le=3650)


class OrgRetentionUpdate(BaseModel):
    """OpenAI's ``UpdateOrganizationDataRetentionBody``, with our periods."""

    model_config = ConfigDict(extra="forbid")
    retention_type: OrgType
    body_retention_days: int | None = DAYS
    usage_retention_days: int | None = DAYS
    audit_retention_days: int | None = DAYS


class ProjectRetentionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retention_type: ProjectType


@dataclass(frozen=True)
class Kept:
    """How long a project's request and response bodies may be kept (0: not at all)."""

    body_days: float


class RetentionStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], default_body_days: float
    ) -> None:
        self._sessions = sessions
        self.default_body_days = default_body_days

    async def organization(
        self, org_id: str, update: OrgRetentionUpdate | None = None
    ) -> dict[str, object]:
        async with self._sessions.begin() as s:
            org = await s.get(Organization, org_id)
            if org is None:
                raise NotFound(f"No organization {org_id!r}.")
            if update is not None:
                org.retention_type = update.retention_type
                fields = update.model_fields_set
                if "body_retention_days" in fields:
                    org.body_retention_days = update.body_retention_days
                if "usage_retention_days" in fields:
                    org.usage_retention_days = update.usage_retention_days
                if "audit_retention_days" in fields:
                    org.audit_retention_days = update.audit_retention_days
            return {
                "object": "organization.data_retention",
                "type": org.retention_type,
                "body_retention_days": org.body_retention_days or self.default_body_days,
                "usage_retention_days": org.usage_retention_days,
                "audit_retention_days": org.audit_retention_days,
            }

    async def project(
        self, org_id: str, project_id: str, update: ProjectRetentionUpdate | None = None
    ) -> dict[str, object]:
        async with self._sessions.begin() as s:
            project = await s.get(Project, project_id)
            if project is None or project.org_id != org_id:
                raise NotFound(f"No project {project_id!r}.", param="project_id")
            if update is not None:
                project.retention_type = update.retention_type
            return {"object": "project.data_retention", "type": project.retention_type}

    async def kept(self, project_id: str) -> Kept:
        """What a project may keep (its own type, else its organisation's)."""
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(
                        Project.retention_type,
                        Organization.retention_type,
                        Organization.body_retention_days,
                    )
                    .join(Organization, Organization.id == Project.org_id)
                    .where(Project.id == project_id)
                )
            ).first()
        if row is None:
            return Kept(self.default_body_days)
        own, org_type, days = row
        effective = org_type if own == "organization_default" else own
        if effective in ZERO:
            return Kept(0)
        return Kept(days or self.default_body_days)

    async def purge(self) -> dict[str, int]:
        """Delete the bodies, usage records and audit entries that outlived their
        organisation's and project's periods; how many of each went."""
        now = utcnow()
        gone = {"responses": 0, "learning_examples": 0, "usage_records": 0, "audit_entries": 0}
        async with self._sessions() as s:
            projects = (
                await s.execute(
                    select(
                        Project.id,
                        Project.retention_type,
                        Organization.id,
                        Organization.retention_type,
                        Organization.body_retention_days,
                        Organization.usage_retention_days,
                    ).join(Organization, Organization.id == Project.org_id)
                )
            ).all()
        usage_by_org: dict[str, int] = {}
        for project_id, own, org_id, org_type, body_days, usage_days in projects:
            effective = org_type if own == "organization_default" else own
            days = 0 if effective in ZERO else (body_days or self.default_body_days)
            cutoff = now - timedelta(days=days)
            async with self._sessions.begin() as s:
                done = await s.execute(
                    delete(StoredResponse).where(
                        StoredResponse.project_id == project_id, StoredResponse.created_at <= cutoff
                    )
                )
                gone["responses"] += max(done.rowcount, 0)  # type: ignore[attr-defined]
                done = await s.execute(
                    delete(LearningExample).where(
                        LearningExample.project_id == project_id,
                        LearningExample.created_at <= cutoff,
                    )
                )
                gone["learning_examples"] += max(done.rowcount, 0)  # type: ignore[attr-defined]
            if usage_days:
                usage_by_org[org_id] = usage_days
        for org_id, usage_days in usage_by_org.items():
            async with self._sessions.begin() as s:
                done = await s.execute(
                    delete(UsageRecord).where(
                        UsageRecord.org_id == org_id,
                        UsageRecord.created_at <= now - timedelta(days=usage_days),
                    )
                )
                gone["usage_records"] += max(done.rowcount, 0)  # type: ignore[attr-defined]
        gone["audit_entries"] = await self._purge_audit(int(now.timestamp()))
        return gone

    async def _purge_audit(self, now: int) -> int:
        async with self._sessions() as s:
            periods = (
                await s.execute(
                    select(Organization.id, Organization.audit_retention_days).where(
                        Organization.audit_retention_days.is_not(None)
                    )
                )
            ).all()
        audit = AuditStore(self._sessions)
        purged = 0
        for org_id, days in periods:
            if not days:
                continue
            count = await audit.purge(org_id, days, now)
            if count:  # said in the organisation's own log (itself purged in its turn)
                details = {"count": count, "retention_days": days, "before": now - days * 86_400}
                await audit.append(
                    AuditEvent(
                        type="audit_log.purged",
                        org_id=org_id,
                        actor={"type": "platform", "platform": {"job": "retention"}},
                        details=details,
                    )
                )
            purged += count
        if purged:
            with suppress(IntegrityError):  # another replica compacted first
                await audit.compact()
        return purged
