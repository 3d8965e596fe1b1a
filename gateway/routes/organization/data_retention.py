"""OpenAI's data retention controls: ``/v1/organization/data_retention`` and
``/v1/organization/projects/{project_id}/data_retention`` (retrieve, update), with what
the platform does for each type (forge.tenancy.retention), and the organisation's periods
for bodies and usage records as our extra fields."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from forge.errors import ServiceUnavailable
from forge.tenancy.retention import OrgRetentionUpdate, ProjectRetentionUpdate, RetentionStore
from gateway.audit import AuditedRoute, audited
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(tags=["organization"], route_class=AuditedRoute)


def _retention(call: OrgCall) -> RetentionStore:
    if call.runtime.retention is None:
        raise ServiceUnavailable("Data retention needs the platform's database.", retry_after=5)
    return call.runtime.retention


@router.get("/data_retention")
async def get_org_retention(call: OrgCall = Depends(org_call)) -> dict[str, Any]:
    return await _retention(call).organization(call.org_id)


@router.post("/data_retention", openapi_extra=audited("organization.updated"))
async def set_org_retention(
    body: OrgRetentionUpdate, call: OrgCall = Depends(org_call)
) -> dict[str, Any]:
    answer = await _retention(call).organization(call.org_id, body)
    call.runtime.forget_retention()
    return answer


@router.get("/projects/{project_id}/data_retention")
async def get_project_retention(
    project_id: str, call: OrgCall = Depends(org_call)
) -> dict[str, Any]:
    return await _retention(call).project(call.org_id, project_id)


@router.post("/projects/{project_id}/data_retention", openapi_extra=audited("project.updated"))
async def set_project_retention(
    project_id: str, body: ProjectRetentionUpdate, call: OrgCall = Depends(org_call)
) -> dict[str, Any]:
    answer = await _retention(call).project(call.org_id, project_id, body)
    call.runtime.forget_retention()
    return answer
