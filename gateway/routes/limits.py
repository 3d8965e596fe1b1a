"""``/admin/rate_limits``: the platform's own way to every limit (OpenAI's Admin API
has only a project's per model: ``/v1/organization/projects/{id}/rate_limits``).

An organisation's admin sets its projects' and keys' limits; only the platform operator
sets an organisation's (an admin raising its own organisation's limits is a 403). A
subject of another organisation is a 404, as if it did not exist.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError

from forge.errors import NotFound, PermissionDenied, ServiceUnavailable
from forge.keys import KeyInfo
from forge.limits.rules import ANY_MODEL, LimitRule, Scope
from forge.limits.store import RateLimitStore
from gateway.audit import AuditedRoute, audited
from gateway.body import read_json_object
from gateway.deps import admin, runtime
from gateway.errors import validation_error
from gateway.runtime import GatewayRuntime

router = APIRouter(prefix="/admin/rate_limits", tags=["admin"], route_class=AuditedRoute)


def _store(rt: GatewayRuntime) -> RateLimitStore:
    if rt.tenancy is None:
        raise ServiceUnavailable("The organization store is not configured.", retry_after=5)
    return rt.tenancy.limits


async def subject_org(
    rt: GatewayRuntime, caller: KeyInfo, scope: Scope, subject_id: str, reading: bool = False
) -> str:
    """The subject's organisation, if the caller may set (``reading``: see) its limits
    or budgets: an admin its own organisation's projects and keys (and read its own
    organisation's), the platform operator anything. Another's is not found."""
    if scope == "organization" and caller.role != "platform":
        if reading and subject_id == caller.org_id:
            return caller.org_id
        raise PermissionDenied(
            "An organization's own limits and budgets are set by the platform operator.",
            code="insufficient_permissions",
        )
    org_id = await _store(rt).subject_org(scope, subject_id)
    if org_id is None or (caller.role != "platform" and org_id != caller.org_id):
        raise NotFound(f"No {scope} with id {subject_id!r}.", param="subject_id")
    return org_id


@router.get("", response_model=list[LimitRule])
async def list_rate_limits(
    scope: Scope = Query(),
    subject_id: str = Query(max_length=40),
    caller: KeyInfo = Depends(admin),
    rt: GatewayRuntime = Depends(runtime),
) -> list[LimitRule]:
    org_id = await subject_org(rt, caller, scope, subject_id, reading=True)
    return await _store(rt).rules(org_id, scope, subject_id)


@router.put("", response_model=LimitRule, openapi_extra=audited("rate_limit.updated"))
async def set_rate_limit(
    request: Request, caller: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> LimitRule:
    """``{"scope", "subject_id", "model" (default "*": all models together), and any of
    the limits}``: sets those given (null clears one), leaves the others."""
    store = _store(rt)
    body: dict[str, Any] = await read_json_object(request, rt.config.server.max_body_bytes)
    values = {k: body.pop(k) for k in list(body) if k not in ("scope", "subject_id", "model")}
    try:
        target = LimitRule.model_validate({"model": ANY_MODEL, **body})
    except ValidationError as exc:
        raise validation_error([dict(e) for e in exc.errors()]) from None
    if target.model != ANY_MODEL:
        rt.router.model(target.model)  # 404 for a model not served
    org_id = await subject_org(rt, caller, target.scope, target.subject_id)
    rule = await store.set_rule(org_id, target.scope, target.subject_id, target.model, values)
    await rt.keys_changed(None)  # verified keys carry their limits
    return rule
