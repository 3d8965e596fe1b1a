"""``/v1/organization/sso_connections``: the organisation's identity provider, OpenID
Connect or SAML 2.0 (``kind``; our path: OpenAI has none). An OIDC client secret is
sealed at rest and never shown again; a SAML IdP's metadata is checked on import; each
email domain signs in through one connection. Enterprise plan."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from forge.errors import NotFound
from forge.identity.sso import ConnectionBody, ConnectionObject, SingleSignOn
from gateway.audit import AuditedRoute, audited
from gateway.permissions import in_plan
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(prefix="/sso_connections", tags=["organization"], route_class=AuditedRoute)
CHANGE = {**audited("organization.updated"), **in_plan("sso")}


def _sso(call: OrgCall) -> SingleSignOn:
    if call.runtime.sso is None:
        raise NotFound("Single sign-on is not enabled on this platform.")
    return call.runtime.sso


@router.post("", response_model=ConnectionObject, openapi_extra=CHANGE)
async def create_connection(
    body: ConnectionBody, call: OrgCall = Depends(org_call)
) -> ConnectionObject:
    return await _sso(call).create(call.org_id, body)


@router.get("", openapi_extra=in_plan("sso"))
async def list_connections(call: OrgCall = Depends(org_call)) -> dict[str, Any]:
    found = await _sso(call).list(call.org_id)
    return {"object": "list", "data": [c.model_dump() for c in found], "has_more": False}


@router.delete("/{connection_id}", openapi_extra=CHANGE)
async def delete_connection(
    connection_id: str, call: OrgCall = Depends(org_call)
) -> dict[str, Any]:
    await _sso(call).delete(call.org_id, connection_id)
    return {"object": "organization.sso_connection.deleted", "id": connection_id, "deleted": True}
