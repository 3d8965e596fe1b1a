"""Custom roles given to a user or a group (``role_assignments``): the queries both the
users' and the groups' stores make, written once."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Delete, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from forge.db.schema import CustomRole, RoleAssignment, utcnow

Principal = Literal["user", "group"]


def of(org_id: str, principal: Principal, principal_id: str) -> list[Any]:
    """The conditions selecting one principal's assignments."""
    return [
        RoleAssignment.org_id == org_id,
        RoleAssignment.principal_type == principal,
        RoleAssignment.principal_id == principal_id,
    ]


async def assigned(
    s: AsyncSession, org_id: str, principal: Principal, principal_id: str
) -> list[tuple[CustomRole, datetime]]:
    """The principal's custom roles with when each was given, oldest first."""
    rows = await s.execute(
        select(CustomRole, RoleAssignment.created_at)
        .join(RoleAssignment, RoleAssignment.role_id == CustomRole.id)
        .where(*of(org_id, principal, principal_id))
        .order_by(RoleAssignment.created_at, CustomRole.id)
    )
    return [(role, when) for role, when in rows.all()]


def assignment(
    org_id: str, principal: Principal, principal_id: str, role_id: str
) -> RoleAssignment:
    return RoleAssignment(
        principal_type=principal,
        principal_id=principal_id,
        role_id=role_id,
        org_id=org_id,
        created_at=utcnow(),
    )


def unassign(
    org_id: str, principal: Principal, principal_id: str, role_id: str | None = None
) -> Delete:
    """Take ``role_id`` (None: every role) from the principal."""
    where = of(org_id, principal, principal_id)
    if role_id is not None:
        where.append(RoleAssignment.role_id == role_id)
    return delete(RoleAssignment).where(*where)
