"""``/v1/organization/groups``: groups of users, their members and the custom roles
given to them (which reach every member)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from forge.people.objects import (
    AssignedRole,
    AssignmentDeleted,
    CursorPage,
    GroupDeleted,
    GroupMemberUser,
    GroupResponse,
    GroupRoleAssignment,
    GroupUpdated,
    GroupUser,
    GroupUserAssignment,
    GroupUserDeleted,
)
from gateway.audit import AuditedRoute, audited
from gateway.permissions import in_plan
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(prefix="/groups", tags=["organization"], route_class=AuditedRoute)
Order = Literal["asc", "desc"]


class GroupName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)


class GroupUserAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=64)


class RoleAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role_id: str = Field(min_length=1, max_length=64)


class Cursor:
    """The roles' and groups' list query: ``limit``, ``after`` (an id), ``order``."""

    def __init__(
        self,
        limit: int = Query(100, ge=0, le=1000),
        after: str | None = Query(None, max_length=64),
        order: Order = Query("asc"),
    ) -> None:
        self.limit = max(1, min(limit, 100))
        self.after = after
        self.order: Order = order


@router.get("", response_model=CursorPage[GroupResponse])
async def list_groups(
    page: Cursor = Depends(), call: OrgCall = Depends(org_call)
) -> CursorPage[GroupResponse]:
    return await call.groups.list_groups(call.org_id, page.limit, page.after, page.order)


@router.post(
    "", response_model=GroupResponse, openapi_extra={**in_plan("teams"), **audited("group.created")}
)
async def create_group(body: GroupName, call: OrgCall = Depends(org_call)) -> GroupResponse:
    return await call.groups.create_group(call.org_id, body.name)


@router.get("/{group_id}", response_model=GroupResponse)
async def get_group(group_id: str, call: OrgCall = Depends(org_call)) -> GroupResponse:
    return await call.groups.get_group(call.org_id, group_id)


@router.post("/{group_id}", response_model=GroupUpdated, openapi_extra=audited("group.updated"))
async def rename_group(
    group_id: str, body: GroupName, call: OrgCall = Depends(org_call)
) -> GroupUpdated:
    return await call.groups.rename_group(call.org_id, group_id, body.name)


@router.delete("/{group_id}", response_model=GroupDeleted, openapi_extra=audited("group.deleted"))
async def delete_group(group_id: str, call: OrgCall = Depends(org_call)) -> GroupDeleted:
    await call.groups.delete_group(call.org_id, group_id, call.held)
    return GroupDeleted(id=group_id)


@router.get("/{group_id}/users", response_model=CursorPage[GroupUser])
async def list_group_users(
    group_id: str, page: Cursor = Depends(), call: OrgCall = Depends(org_call)
) -> CursorPage[GroupUser]:
    return await call.groups.list_members(call.org_id, group_id, page.limit, page.after, page.order)


@router.post(
    "/{group_id}/users",
    response_model=GroupUserAssignment,
    openapi_extra=audited("group.updated"),
)
async def add_group_user(
    group_id: str, body: GroupUserAdd, call: OrgCall = Depends(org_call)
) -> GroupUserAssignment:
    return await call.groups.add_member(call.org_id, group_id, body.user_id, call.held)


@router.get("/{group_id}/users/{user_id}", response_model=GroupMemberUser)
async def get_group_user(
    group_id: str, user_id: str, call: OrgCall = Depends(org_call)
) -> GroupMemberUser:
    return await call.groups.get_member(call.org_id, group_id, user_id)


@router.delete(
    "/{group_id}/users/{user_id}",
    response_model=GroupUserDeleted,
    openapi_extra=audited("group.updated"),
)
async def remove_group_user(
    group_id: str, user_id: str, call: OrgCall = Depends(org_call)
) -> GroupUserDeleted:
    await call.groups.remove_member(call.org_id, group_id, user_id, call.held)
    return GroupUserDeleted()


@router.get("/{group_id}/roles", response_model=CursorPage[AssignedRole])
async def list_group_roles(
    group_id: str,
    limit: int = Query(1000),
    after: str | None = Query(None, max_length=64),
    call: OrgCall = Depends(org_call),
) -> CursorPage[AssignedRole]:
    return await call.groups.list_roles(call.org_id, group_id, limit, after)


@router.post(
    "/{group_id}/roles",
    response_model=GroupRoleAssignment,
    openapi_extra=audited("role.assignment.created"),
)
async def assign_group_role(
    group_id: str, body: RoleAssign, call: OrgCall = Depends(org_call)
) -> GroupRoleAssignment:
    return await call.groups.assign_role(call.org_id, group_id, body.role_id, call.held)


@router.get("/{group_id}/roles/{role_id}", response_model=AssignedRole)
async def get_group_role(
    group_id: str, role_id: str, call: OrgCall = Depends(org_call)
) -> AssignedRole:
    return await call.groups.get_role(call.org_id, group_id, role_id)


@router.delete(
    "/{group_id}/roles/{role_id}",
    response_model=AssignmentDeleted,
    openapi_extra=audited("role.assignment.deleted"),
)
async def unassign_group_role(
    group_id: str, role_id: str, call: OrgCall = Depends(org_call)
) -> AssignmentDeleted:
    await call.groups.unassign_role(call.org_id, group_id, role_id, call.held)
    return AssignmentDeleted(object="group.role.deleted")
