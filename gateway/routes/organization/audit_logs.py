"""``GET /v1/organization/audit_logs``: an organisation's audit log, newest first, with
OpenAI's filters (``effective_at[gt|gte|lt|lte]``, ``project_ids[]``, ``event_types[]``,
``actor_ids[]``, ``resource_ids[]``) and cursors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from forge.audit.store import AuditFilter
from forge.errors import ServiceUnavailable
from forge.tenancy.objects import Page
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(tags=["organization"])
Ids = list[str] | None


@router.get("/audit_logs")
async def list_audit_logs(
    limit: int = Query(20),
    after: str | None = Query(None, max_length=64),
    before: str | None = Query(None, max_length=64),
    gt: int | None = Query(None, alias="effective_at[gt]"),
    gte: int | None = Query(None, alias="effective_at[gte]"),
    lt: int | None = Query(None, alias="effective_at[lt]"),
    lte: int | None = Query(None, alias="effective_at[lte]"),
    project_ids: Ids = Query(None, alias="project_ids[]"),
    event_types: Ids = Query(None, alias="event_types[]"),
    actor_ids: Ids = Query(None, alias="actor_ids[]"),
    resource_ids: Ids = Query(None, alias="resource_ids[]"),
    call: OrgCall = Depends(org_call),
) -> Page[dict[str, Any]]:
    audit = call.runtime.audit
    if audit is None:
        raise ServiceUnavailable("The audit log is not configured.", retry_after=5)
    where = AuditFilter(
        gt=gt,
        gte=gte,
        lt=lt,
        lte=lte,
        project_ids=project_ids or [],
        event_types=event_types or [],
        actor_ids=actor_ids or [],
        resource_ids=resource_ids or [],
    )
    return await audit.list(call.org_id, limit, after, before, where)
