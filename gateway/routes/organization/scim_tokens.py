"""``/v1/organization/scim_tokens``: the bearer tokens an identity provider provisions
the organisation with at ``/scim/v2`` (our path: OpenAI has none). A token is shown
once, at creation; only its SHA-256 is kept. Enterprise plan."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from forge.errors import NotFound
from forge.identity.scim import ScimStore
from forge.tenancy.objects import unix
from gateway.audit import AuditedRoute, audited
from gateway.permissions import in_plan
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(prefix="/scim_tokens", tags=["organization"], route_class=AuditedRoute)
CHANGE = {**audited("organization.updated"), **in_plan("sso")}


def _scim(call: OrgCall) -> ScimStore:
    if call.runtime.scim is None:
        raise NotFound("SCIM is not enabled on this platform.")
    return call.runtime.scim


@router.post("", openapi_extra=CHANGE)
async def create_token(call: OrgCall = Depends(org_call)) -> dict[str, Any]:
    row, token = await _scim(call).new_token(call.org_id)
    return {
        "object": "organization.scim_token",
        "id": row.id,
        "token": token,
        "base_url": _scim(call).base_url,
        "created_at": unix(row.created_at),
    }


@router.get("", openapi_extra=in_plan("sso"))
async def list_tokens(call: OrgCall = Depends(org_call)) -> dict[str, Any]:
    rows = await _scim(call).tokens(call.org_id)
    data = [
        {
            "object": "organization.scim_token",
            "id": r.id,
            "created_at": unix(r.created_at),
            "last_used_at": unix(r.last_used_at),
        }
        for r in rows
    ]
    return {"object": "list", "data": data, "has_more": False}


@router.delete("/{token_id}", openapi_extra=CHANGE)
async def revoke_token(token_id: str, call: OrgCall = Depends(org_call)) -> dict[str, Any]:
    if not await _scim(call).revoke_token(call.org_id, token_id):
        raise NotFound(f"No SCIM token {token_id!r}.", param="token_id")
    return {"object": "organization.scim_token.deleted", "id": token_id, "deleted": True}
