"""``/v1/organization/projects/{project_id}/api_keys`` and
``/v1/organization/admin_api_keys``: keys listed redacted, deleted (revoked) by id; admin
keys created here (the value shown once), project keys through service accounts."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from forge.keys import person_of
from forge.tenancy.objects import (
    AdminApiKeyCreated,
    AdminApiKeyObject,
    Deleted,
    Page,
    ProjectApiKeyObject,
)
from gateway.audit import AuditedRoute, audited
from gateway.routes.organization.scope import OrgCall, Paging, org_call

router = APIRouter(tags=["organization"], route_class=AuditedRoute)
PROJECT_KEYS = "/projects/{project_id}/api_keys"


class AdminKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    expires_in_seconds: int | None = Field(None, ge=1, le=31_536_000)


@router.get(PROJECT_KEYS, response_model=Page[ProjectApiKeyObject])
async def list_project_keys(
    project_id: str, paging: Paging = Depends(), call: OrgCall = Depends(org_call)
) -> Page[ProjectApiKeyObject]:
    return await call.store.list_project_keys(call.org_id, project_id, paging.limit, paging.after)


@router.get(PROJECT_KEYS + "/{key_id}", response_model=ProjectApiKeyObject)
async def get_project_key(
    project_id: str, key_id: str, call: OrgCall = Depends(org_call)
) -> ProjectApiKeyObject:
    return await call.store.get_project_key(call.org_id, project_id, key_id)


@router.delete(
    PROJECT_KEYS + "/{key_id}", response_model=Deleted, openapi_extra=audited("api_key.deleted")
)
async def delete_project_key(
    project_id: str, key_id: str, call: OrgCall = Depends(org_call)
) -> Deleted:
    await call.store.delete_project_key(call.org_id, project_id, key_id)
    await call.runtime.keys_changed([key_id])
    return Deleted(object="organization.project.api_key.deleted", id=key_id)


@router.get("/admin_api_keys", response_model=Page[AdminApiKeyObject])
async def list_admin_keys(
    paging: Paging = Depends(),
    order: Literal["asc", "desc"] = Query("asc"),
    call: OrgCall = Depends(org_call),
) -> Page[AdminApiKeyObject]:
    return await call.store.list_admin_keys(call.org_id, paging.limit, paging.after, order)


@router.post(
    "/admin_api_keys", response_model=AdminApiKeyCreated, openapi_extra=audited("api_key.created")
)
async def create_admin_key(
    body: AdminKeyCreate, call: OrgCall = Depends(org_call)
) -> AdminApiKeyCreated:
    return await call.store.create_admin_key(
        call.org_id, body.name, body.expires_in_seconds, person_of(call.key)
    )


@router.get("/admin_api_keys/{key_id}", response_model=AdminApiKeyObject)
async def get_admin_key(key_id: str, call: OrgCall = Depends(org_call)) -> AdminApiKeyObject:
    return await call.store.get_admin_key(call.org_id, key_id)


@router.delete(
    "/admin_api_keys/{key_id}", response_model=Deleted, openapi_extra=audited("api_key.deleted")
)
async def delete_admin_key(key_id: str, call: OrgCall = Depends(org_call)) -> Deleted:
    await call.store.delete_admin_key(call.org_id, key_id)
    await call.runtime.keys_changed([key_id])
    return Deleted(object="organization.admin_api_key.deleted", id=key_id)
