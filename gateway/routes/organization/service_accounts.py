"""``/v1/organization/projects/{project_id}/service_accounts``: a project's non-human
members; creating one creates its first API key (shown once), as OpenAI's does."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from forge.tenancy.objects import (
    Deleted,
    Page,
    ServiceAccountCreated,
    ServiceAccountKey,
    ServiceAccountObject,
)
from gateway.audit import AuditedRoute, audited
from gateway.routes.organization.scope import OrgCall, Paging, org_call

router = APIRouter(
    prefix="/projects/{project_id}/service_accounts",
    tags=["organization"],
    route_class=AuditedRoute,
)


class ServiceAccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    create_service_account_only: bool | None = None


class ServiceAccountKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)


@router.get("", response_model=Page[ServiceAccountObject])
async def list_service_accounts(
    project_id: str, paging: Paging = Depends(), call: OrgCall = Depends(org_call)
) -> Page[ServiceAccountObject]:
    return await call.store.list_service_accounts(
        call.org_id, project_id, paging.limit, paging.after
    )


@router.post(
    "", response_model=ServiceAccountCreated, openapi_extra=audited("service_account.created")
)
async def create_service_account(
    project_id: str, body: ServiceAccountCreate, call: OrgCall = Depends(org_call)
) -> ServiceAccountCreated:
    return await call.store.create_service_account(
        call.org_id, project_id, body.name, with_key=not body.create_service_account_only
    )


@router.get("/{service_account_id}", response_model=ServiceAccountObject)
async def get_service_account(
    project_id: str, service_account_id: str, call: OrgCall = Depends(org_call)
) -> ServiceAccountObject:
    return await call.store.get_service_account(call.org_id, project_id, service_account_id)


@router.delete(
    "/{service_account_id}",
    response_model=Deleted,
    openapi_extra=audited("service_account.deleted"),
)
async def delete_service_account(
    project_id: str, service_account_id: str, call: OrgCall = Depends(org_call)
) -> Deleted:
    revoked = await call.store.delete_service_account(call.org_id, project_id, service_account_id)
    await call.runtime.keys_changed(revoked)
    return Deleted(object="organization.project.service_account.deleted", id=service_account_id)


@router.post(
    "/{service_account_id}/api_keys",
    response_model=ServiceAccountKey,
    openapi_extra=audited("api_key.created"),
)
async def create_service_account_key(
    project_id: str,
    service_account_id: str,
    body: ServiceAccountKeyCreate,
    call: OrgCall = Depends(org_call),
) -> ServiceAccountKey:
    return await call.store.create_service_account_key(
        call.org_id, project_id, service_account_id, body.name
    )
