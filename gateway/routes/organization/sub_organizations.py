"""``/v1/organization/sub_organizations``: a Platform-plan organisation resells the
platform: it creates organisations of its own customers (each a tenant of its own, with
its own admin key, shown once), lists them, and exports their usage with its own
(``/usage/export?include_sub_organizations=true``). Not an OpenAI path."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from forge.tenancy.objects import OrganizationObject
from gateway.audit import AuditedRoute, audited
from gateway.permissions import in_plan
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(prefix="/sub_organizations", tags=["organization"], route_class=AuditedRoute)
# What a reseller may sell: any plan but its own (no resale of resale).
ResoldPlan = Literal["community", "professional", "enterprise"]


class SubOrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    plan: ResoldPlan = "professional"


class SubOrganizationCreated(BaseModel):
    organization: OrganizationObject
    admin_key: str = Field(description="Its first admin key: shown once, never again.")


class SubOrganizationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OrganizationObject]


@router.post(
    "",
    response_model=SubOrganizationCreated,
    openapi_extra={**in_plan("sub_organizations"), **audited("organization.created")},
)
async def create_sub_organization(
    body: SubOrganizationCreate, call: OrgCall = Depends(org_call)
) -> SubOrganizationCreated:
    org, admin_key = await call.store.create_org(body.name, body.plan, parent_id=call.org_id)
    return SubOrganizationCreated(organization=org, admin_key=admin_key)


@router.get("", response_model=SubOrganizationList, openapi_extra=in_plan("sub_organizations"))
async def list_sub_organizations(call: OrgCall = Depends(org_call)) -> SubOrganizationList:
    return SubOrganizationList(data=await call.store.sub_organizations(call.org_id))


@router.get(
    "/{org_id}", response_model=OrganizationObject, openapi_extra=in_plan("sub_organizations")
)
async def get_sub_organization(
    org_id: str, call: OrgCall = Depends(org_call)
) -> OrganizationObject:
    return await call.store.sub_organization(call.org_id, org_id)
