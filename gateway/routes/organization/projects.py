"""``/v1/organization/projects``: list, create, retrieve, rename, archive."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from forge.tenancy.objects import Page, ProjectObject
from gateway.audit import AuditedRoute, audited
from gateway.routes.organization.scope import OrgCall, Paging, org_call

router = APIRouter(prefix="/projects", tags=["organization"], route_class=AuditedRoute)


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


@router.get("", response_model=Page[ProjectObject])
async def list_projects(
    paging: Paging = Depends(),
    include_archived: bool = Query(False),
    call: OrgCall = Depends(org_call),
) -> Page[ProjectObject]:
    return await call.store.list_projects(call.org_id, paging.limit, paging.after, include_archived)


@router.post("", response_model=ProjectObject, openapi_extra=audited("project.created"))
async def create_project(body: ProjectCreate, call: OrgCall = Depends(org_call)) -> ProjectObject:
    return await call.store.create_project(call.org_id, body.name)


@router.get("/{project_id}", response_model=ProjectObject)
async def get_project(project_id: str, call: OrgCall = Depends(org_call)) -> ProjectObject:
    return await call.store.get_project(call.org_id, project_id)


@router.post(
    "/{project_id}", response_model=ProjectObject, openapi_extra=audited("project.updated")
)
async def modify_project(
    project_id: str, body: ProjectUpdate, call: OrgCall = Depends(org_call)
) -> ProjectObject:
    return await call.store.rename_project(call.org_id, project_id, body.name)


@router.post(
    "/{project_id}/archive", response_model=ProjectObject, openapi_extra=audited("project.archived")
)
async def archive_project(project_id: str, call: OrgCall = Depends(org_call)) -> ProjectObject:
    """Its keys stop working (403): cached ones carry the project's status, so they go."""
    project = await call.store.archive_project(call.org_id, project_id)
    await call.runtime.keys_changed(None)
    return project
