"""``/admin/organizations``: the platform operator's routes above organisations: create
one (with its default project and a first admin key, shown once), list, read, change
its plan, suspend or reactivate it, delete it. The operator's key only."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from forge.errors import ServiceUnavailable
from forge.keys import KeyInfo
from forge.tenancy.objects import Deleted, OrganizationObject, Page
from forge.tenancy.plans import PlanName
from forge.tenancy.store import TenancyStore
from gateway.audit import AuditedRoute, audited
from gateway.deps import operator, runtime
from gateway.routes.organization.scope import Paging
from gateway.runtime import GatewayRuntime

router = APIRouter(prefix="/admin/organizations", tags=["operator"], route_class=AuditedRoute)


class OrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    plan: PlanName = "professional"


class OrganizationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: PlanName | None = None
    status: Literal["active", "suspended"] | None = None


class OrganizationCreated(BaseModel):
    organization: OrganizationObject
    admin_key: str = Field(description="The organization's first admin key; shown once.")


async def store(
    _: KeyInfo = Depends(operator), rt: GatewayRuntime = Depends(runtime)
) -> TenancyStore:
    if rt.tenancy is None:
        raise ServiceUnavailable("The organization store is not configured.", retry_after=5)
    return rt.tenancy


@router.post(
    "",
    response_model=OrganizationCreated,
    status_code=201,
    openapi_extra=audited("organization.created"),
)
async def create_organization(
    body: OrganizationCreate, tenancy: TenancyStore = Depends(store)
) -> OrganizationCreated:
    org, key = await tenancy.create_org(body.name, body.plan)
    return OrganizationCreated(organization=org, admin_key=key)


@router.get("", response_model=Page[OrganizationObject])
async def list_organizations(
    paging: Paging = Depends(), tenancy: TenancyStore = Depends(store)
) -> Page[OrganizationObject]:
    return await tenancy.list_orgs(paging.limit, paging.after)


@router.get("/{org_id}", response_model=OrganizationObject)
async def get_organization(
    org_id: str, tenancy: TenancyStore = Depends(store)
) -> OrganizationObject:
    return await tenancy.get_org(org_id)


@router.post(
    "/{org_id}", response_model=OrganizationObject, openapi_extra=audited("organization.updated")
)
async def update_organization(
    org_id: str,
    body: OrganizationUpdate,
    tenancy: TenancyStore = Depends(store),
    rt: GatewayRuntime = Depends(runtime),
) -> OrganizationObject:
    """A suspended organisation's keys get 403 on every route until it is active again."""
    org = await tenancy.set_org(org_id, status=body.status, plan=body.plan)
    await rt.keys_changed(None)  # cached keys carry their organisation's status
    return org


@router.delete("/{org_id}", response_model=Deleted, openapi_extra=audited("organization.deleted"))
async def delete_organization(
    org_id: str, tenancy: TenancyStore = Depends(store), rt: GatewayRuntime = Depends(runtime)
) -> Deleted:
    """Its keys stop working; its rows (usage, audit) stay for the record."""
    await tenancy.set_org(org_id, status="deleted")
    await rt.keys_changed(None)
    return Deleted(object="organization.deleted", id=org_id)
