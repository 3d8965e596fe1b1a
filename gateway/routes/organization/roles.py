"""``/v1/organization/roles``: the predefined roles and the organisation's own (custom
roles: named permission lists). No one makes a role with permissions they lack."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from forge.people.objects import CursorPage, RoleObject
from gateway.audit import AuditedRoute, audited
from gateway.permissions import in_plan
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(prefix="/roles", tags=["organization"], route_class=AuditedRoute)


class RoleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role_name: str = Field(min_length=1, max_length=200)
    permissions: list[str] = Field(max_length=100)
    description: str | None = Field(None, max_length=2000)


class RoleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role_name: str | None = Field(None, min_length=1, max_length=200)
    permissions: list[str] | None = Field(None, max_length=100)
    description: str | None = Field(None, max_length=2000)


class RoleDeleted(BaseModel):
    object: Literal["role.deleted"] = "role.deleted"
    id: str
    deleted: bool = True


@router.get("", response_model=CursorPage[RoleObject])
async def list_roles(
    limit: int = Query(1000),
    after: str | None = Query(None, max_length=64),
    order: Literal["asc", "desc"] = Query("asc"),
    call: OrgCall = Depends(org_call),
) -> CursorPage[RoleObject]:
    return await call.people.list_roles(call.org_id, limit, after, order)


@router.post(
    "", response_model=RoleObject, openapi_extra={**in_plan("teams"), **audited("role.created")}
)
async def create_role(body: RoleCreate, call: OrgCall = Depends(org_call)) -> RoleObject:
    return await call.people.create_role(
        call.org_id, body.role_name, body.permissions, body.description, call.held
    )


@router.get("/{role_id}", response_model=RoleObject)
async def get_role(role_id: str, call: OrgCall = Depends(org_call)) -> RoleObject:
    return await call.people.get_role(call.org_id, role_id)


@router.post("/{role_id}", response_model=RoleObject, openapi_extra=audited("role.updated"))
async def update_role(
    role_id: str, body: RoleUpdate, call: OrgCall = Depends(org_call)
) -> RoleObject:
    return await call.people.update_role(
        call.org_id, role_id, body.role_name, body.permissions, body.description, call.held
    )


@router.delete("/{role_id}", response_model=RoleDeleted, openapi_extra=audited("role.deleted"))
async def delete_role(role_id: str, call: OrgCall = Depends(org_call)) -> RoleDeleted:
    await call.people.delete_role(call.org_id, role_id, call.held)
    return RoleDeleted(id=role_id)
