"""``/v1/organization/projects/{project_id}/users``: a project's members and their
project role (``owner`` or ``member``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from forge.errors import InvalidRequest
from forge.people.objects import ProjectUserObject
from forge.people.permissions import ProjectRoleName
from forge.tenancy.objects import Deleted, Page
from gateway.audit import AuditedRoute, audited
from gateway.permissions import in_plan
from gateway.routes.organization.scope import OrgCall, Paging, org_call

router = APIRouter(
    prefix="/projects/{project_id}/users", tags=["organization"], route_class=AuditedRoute
)


class ProjectUserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = None
    email: str | None = None
    role: ProjectRoleName


class ProjectUserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: ProjectRoleName | None = None


@router.get("", response_model=Page[ProjectUserObject])
async def list_project_users(
    project_id: str, paging: Paging = Depends(), call: OrgCall = Depends(org_call)
) -> Page[ProjectUserObject]:
    return await call.people.list_project_users(call.org_id, project_id, paging.limit, paging.after)


@router.post(
    "",
    response_model=ProjectUserObject,
    openapi_extra={**in_plan("teams"), **audited("project.updated")},
)
async def add_project_user(
    project_id: str, body: ProjectUserCreate, call: OrgCall = Depends(org_call)
) -> ProjectUserObject:
    return await call.people.add_project_user(
        call.org_id, project_id, body.user_id, body.email, body.role, call.held
    )


@router.get("/{user_id}", response_model=ProjectUserObject)
async def get_project_user(
    project_id: str, user_id: str, call: OrgCall = Depends(org_call)
) -> ProjectUserObject:
    return await call.people.get_project_user(call.org_id, project_id, user_id)


@router.post(
    "/{user_id}", response_model=ProjectUserObject, openapi_extra=audited("project.updated")
)
async def update_project_user(
    project_id: str, user_id: str, body: ProjectUserUpdate, call: OrgCall = Depends(org_call)
) -> ProjectUserObject:
    if body.role is None:
        raise InvalidRequest("Give 'role' (owner or member).", param="role")
    return await call.people.set_project_user_role(
        call.org_id, project_id, user_id, body.role, call.held
    )


@router.delete("/{user_id}", response_model=Deleted, openapi_extra=audited("project.updated"))
async def remove_project_user(
    project_id: str, user_id: str, call: OrgCall = Depends(org_call)
) -> Deleted:
    await call.people.remove_project_user(call.org_id, project_id, user_id, call.held)
    return Deleted(object="organization.project.user.deleted", id=user_id)
