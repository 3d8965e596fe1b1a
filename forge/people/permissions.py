"""Permissions and the predefined roles: what a person's admin key may do.

The Admin API's routes each need one permission, ``<resource>.read`` for a GET and
``<resource>.write`` otherwise (``permission_for``), declared once per router. A key
owned by a person acts with that person's permissions: the union of their organisation
role's (``owner`` or ``reader``) and of the custom roles given to them, directly or
through their groups. An admin key that no person owns (the one an organisation is
created with, the operator's) holds them all.

No one grants more than they hold: a role, an invitation or a custom role whose
permissions are not all the caller's is a 403 (``check_grant``). That is the whole rule
against raising oneself or another above one's own role, and it needs no ranking of
roles, so it holds for custom roles as for the predefined ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from forge.errors import InvalidRequest, PermissionDenied

ORG_RESOURCE = "api.organization"
PROJECT_RESOURCE = "api.project"

# The resources of the Admin API; each has a .read and a .write permission.
RESOURCES = (
    "api.organization.users",
    "api.organization.invites",
    "api.organization.projects",
    "api.organization.projects.api_keys",
    "api.organization.admin_api_keys",
    "api.organization.roles",
    "api.groups",
    "api.organization.audit_logs",
    "api.organization.usage",
    "api.organization.webhooks",
)
MODEL_REQUEST = "api.model.request"  # inference with the person's project keys
PERMISSIONS: frozenset[str] = frozenset(
    {f"{r}.{a}" for r in RESOURCES for a in ("read", "write")} | {MODEL_REQUEST}
)
READS: frozenset[str] = frozenset(p for p in PERMISSIONS if p.endswith(".read"))

OrgRoleName = Literal["owner", "reader"]
ProjectRoleName = Literal["owner", "member"]


@dataclass(frozen=True)
class PredefinedRole:
    id: str
    name: str
    description: str
    permissions: frozenset[str]
    resource_type: str


PREDEFINED: dict[str, PredefinedRole] = {
    role.id: role
    for role in (
        PredefinedRole(
            "role_org_owner",
            "owner",
            "Everything in the organization.",
            PERMISSIONS,
            ORG_RESOURCE,
        ),
        PredefinedRole(
            "role_org_reader",
            "reader",
            "Reads everything in the organization and makes model requests; changes nothing.",
            READS | {MODEL_REQUEST},
            ORG_RESOURCE,
        ),
        PredefinedRole(
            "role_project_owner",
            "project owner",
            "Manages a project: its members, service accounts, keys and limits.",
            frozenset(
                {
                    "api.organization.projects.read",
                    "api.organization.projects.write",
                    "api.organization.projects.api_keys.read",
                    "api.organization.projects.api_keys.write",
                    MODEL_REQUEST,
                }
            ),
            PROJECT_RESOURCE,
        ),
        PredefinedRole(
            "role_project_member",
            "project member",
            "Uses a project: reads it and makes model requests.",
            frozenset({"api.organization.projects.read", MODEL_REQUEST}),
            PROJECT_RESOURCE,
        ),
    )
}
ORG_ROLE_IDS: dict[OrgRoleName, str] = {"owner": "role_org_owner", "reader": "role_org_reader"}
PROJECT_ROLE_IDS: dict[ProjectRoleName, str] = {
    "owner": "role_project_owner",
    "member": "role_project_member",
}


def org_role_permissions(role: str) -> frozenset[str]:
    return PREDEFINED[ORG_ROLE_IDS[role]].permissions  # type: ignore[index]


def project_role_permissions(role: str) -> frozenset[str]:
    return PREDEFINED[PROJECT_ROLE_IDS[role]].permissions  # type: ignore[index]


def permission_for(resource: str, method: str) -> str:
    """The permission a call needs: reading with GET, writing with anything else."""
    return f"{resource}.{'read' if method in ('GET', 'HEAD') else 'write'}"


def check_known(permissions: Iterable[str]) -> list[str]:
    """The permissions, each one known (400 naming the first that is not)."""
    listed = list(dict.fromkeys(permissions))
    for name in listed:
        if name not in PERMISSIONS:
            raise InvalidRequest(
                f"Unknown permission {name!r}; known: {', '.join(sorted(PERMISSIONS))}.",
                param="permissions",
                code="invalid_value",
            )
    return listed


def check_grant(held: frozenset[str], granted: Iterable[str], what: str) -> None:
    """403 when ``granted`` holds a permission that ``held`` lacks."""
    missing = sorted(set(granted) - held)
    if missing:
        raise PermissionDenied(
            f"You cannot grant {what}: it carries permissions you do not hold "
            f"({', '.join(missing)}).",
            code="role_above_caller",
        )


def require(held: frozenset[str], needed: str) -> None:
    if needed not in held:
        raise PermissionDenied(
            f"Your role does not allow this: it needs the permission {needed!r}.",
            code="missing_permission",
        )
