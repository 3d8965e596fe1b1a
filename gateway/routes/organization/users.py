"""``/v1/organization/users``: the organisation's people, their organisation role, and
the custom roles given to them (``/users/{user_id}/roles``). Removing a person revokes
their keys on every replica at once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from forge.errors import InvalidRequest, NotFound
from forge.people.objects import (
    AssignedRole,
    AssignmentDeleted,
    CursorPage,
    UserObject,
    UserRoleAssignment,
)
from forge.people.permissions import OrgRoleName
from forge.tenancy.objects import Deleted, Page
from gateway.audit import AuditedRoute, audited
from gateway.routes.organization.scope import OrgCall, Paging, org_call

router = APIRouter(prefix="/users", tags=["organization"], route_class=AuditedRoute)


class UserRoleUpdate(BaseModel):
    """OpenAI's ``UserRoleUpdateRequest``: ``role`` is what this route changes."""

    model_config = ConfigDict(extra="forbid")
    role: OrgRoleName | None = None
    role_id: str | None = None
    technical_level: str | None = None
    developer_persona: str | None = None


class RoleAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role_id: str


@router.get("", response_model=Page[UserObject])
async def list_users(
    paging: Paging = Depends(),
    emails: list[str] | None = Query(None),
    call: OrgCall = Depends(org_call),
) -> Page[UserObject]:
    return await call.people.list_users(call.org_id, paging.limit, paging.after, emails)


@router.get("/{user_id}", response_model=UserObject)
async def get_user(user_id: str, call: OrgCall = Depends(org_call)) -> UserObject:
    return await call.people.get_user(call.org_id, user_id)


@router.post("/{user_id}", response_model=UserObject, openapi_extra=audited("user.updated"))
async def update_user(
    user_id: str, body: UserRoleUpdate, call: OrgCall = Depends(org_call)
) -> UserObject:
    if body.role_id is not None:
        assigned = await call.people.assign_user_role(call.org_id, user_id, body.role_id, call.held)
        return assigned.user
    if body.role is None:
        raise InvalidRequest("Give 'role' (owner or reader) or 'role_id'.", param="role")
    return await call.people.set_user_role(call.org_id, user_id, body.role, call.held)


@router.delete("/{user_id}", response_model=Deleted, openapi_extra=audited("user.deleted"))
async def delete_user(user_id: str, call: OrgCall = Depends(org_call)) -> Deleted:
    revoked = await call.people.delete_user(call.org_id, user_id, call.held)
    if revoked:
        await call.runtime.keys_changed(revoked)
    if call.runtime.identity is not None:  # their browser sessions end too
        await call.runtime.identity.revoke_user(user_id)
    return Deleted(object="organization.user.deleted", id=user_id)


@router.post("/{user_id}/unlock", openapi_extra=audited("user.updated"))
async def unlock_user(user_id: str, call: OrgCall = Depends(org_call)) -> dict[str, Any]:
    """Lift the lock that failed logins put on a member's email (forge.identity)."""
    if call.runtime.identity is None:
        raise NotFound("People's logins are not enabled on this platform.")
    locked = await call.runtime.identity.unlock(call.org_id, user_id)
    return {"object": "organization.user.unlocked", "id": user_id, "was_locked": locked}


@router.get("/{user_id}/roles", response_model=CursorPage[AssignedRole])
async def list_user_roles(
    user_id: str,
    limit: int = Query(1000),
    after: str | None = Query(None, max_length=64),
    call: OrgCall = Depends(org_call),
) -> CursorPage[AssignedRole]:
    return await call.people.list_user_roles(call.org_id, user_id, limit, after)


@router.post(
    "/{user_id}/roles",
    response_model=UserRoleAssignment,
    openapi_extra=audited("role.assignment.created"),
)
async def assign_user_role(
    user_id: str, body: RoleAssign, call: OrgCall = Depends(org_call)
) -> UserRoleAssignment:
    return await call.people.assign_user_role(call.org_id, user_id, body.role_id, call.held)


@router.get("/{user_id}/roles/{role_id}", response_model=AssignedRole)
async def get_user_role(
    user_id: str, role_id: str, call: OrgCall = Depends(org_call)
) -> AssignedRole:
    return await call.people.get_user_role(call.org_id, user_id, role_id)


@router.delete(
    "/{user_id}/roles/{role_id}",
    response_model=AssignmentDeleted,
    openapi_extra=audited("role.assignment.deleted"),
)
async def unassign_user_role(
    user_id: str, role_id: str, call: OrgCall = Depends(org_call)
) -> AssignmentDeleted:
    await call.people.unassign_user_role(call.org_id, user_id, role_id, call.held)
    return AssignmentDeleted(object="user.role.deleted")
