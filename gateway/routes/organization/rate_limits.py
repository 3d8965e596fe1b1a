"""``/v1/organization/projects/{project_id}/rate_limits``: a project's limits on each
model the platform serves (``rl-<model>``), as OpenAI's Admin API lists and updates
them. A project's limit can be lowered below its organisation's, never raised above it;
a change reaches every gateway replica through the key changes feed."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from forge.errors import InvalidRequest, NotFound
from forge.limits.store import RATE_LIMIT_ID_PREFIX, ProjectRateLimit, rate_limit_id
from forge.tenancy.objects import Page
from forge.tenancy.paging import check_limit
from gateway.audit import AuditedRoute, audited
from gateway.body import read_json_object
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(
    prefix="/projects/{project_id}/rate_limits", tags=["organization"], route_class=AuditedRoute
)


def _served(call: OrgCall) -> list[str]:
    return [m.name for m in call.runtime.router.models]


@router.get("", response_model=Page[ProjectRateLimit], response_model_exclude_none=True)
async def list_project_rate_limits(
    project_id: str,
    limit: int = Query(100),
    after: str | None = Query(None, max_length=240),
    before: str | None = Query(None, max_length=240),
    call: OrgCall = Depends(org_call),
) -> Page[ProjectRateLimit]:
    check_limit(limit)
    await call.store.get_project(call.org_id, project_id)
    org = await call.store.get_org(call.org_id)
    ids = [rate_limit_id(m) for m in _served(call)]
    start, stop = 0, len(ids)
    for name, cursor in (("after", after), ("before", before)):
        if cursor is not None and cursor not in ids:
            raise InvalidRequest(
                f"Invalid {name!r}: {cursor!r} is not an id from this list.",
                param=name,
                code="invalid_value",
            )
    if after is not None:
        start = ids.index(after) + 1
    if before is not None:
        stop = ids.index(before)
    window = _served(call)[start:stop]
    chosen = window[:limit] if before is None else window[-limit:]
    data = await call.store.limits.project_limits(call.org_id, project_id, org.plan, chosen)
    more = len(window) > limit
    return Page(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=more,
    )


@router.post(
    "/{rate_limit_id}",
    response_model=ProjectRateLimit,
    response_model_exclude_none=True,
    openapi_extra=audited("rate_limit.updated"),
)
async def update_project_rate_limit(
    project_id: str, rate_limit_id: str, request: Request, call: OrgCall = Depends(org_call)
) -> ProjectRateLimit:
    """Set any of the limits (null: back to the organisation's)."""
    await call.store.get_project(call.org_id, project_id)
    model = rate_limit_id.removeprefix(RATE_LIMIT_ID_PREFIX)
    if not rate_limit_id.startswith(RATE_LIMIT_ID_PREFIX) or model not in _served(call):
        raise NotFound(f"No rate limit with id {rate_limit_id!r}.", param="rate_limit_id")
    body = await read_json_object(request, call.runtime.config.server.max_body_bytes)
    org = await call.store.get_org(call.org_id)
    updated = await call.store.limits.update_project_limit(
        call.org_id, project_id, org.plan, model, body
    )
    await call.runtime.keys_changed(None)  # verified keys carry their limits
    return updated
