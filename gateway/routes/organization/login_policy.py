"""``/v1/organization/login_policy`` (our path): whether every local account of the
organisation must have a second factor (a member without one gets a session that can
only enrol one), and whether single sign-on is enforced (set on its connection)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from forge.errors import NotFound
from forge.identity.service import Identity
from gateway.audit import AuditedRoute, audited
from gateway.routes.organization.scope import OrgCall, org_call

router = APIRouter(prefix="/login_policy", tags=["organization"], route_class=AuditedRoute)


class LoginPolicyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    require_mfa: bool


def _identity(call: OrgCall) -> Identity:
    if call.runtime.identity is None:
        raise NotFound("People's logins are not enabled on this platform.")
    return call.runtime.identity


@router.get("")
async def get_policy(call: OrgCall = Depends(org_call)) -> dict[str, Any]:
    return await _identity(call).login_policy(call.org_id)


@router.post("", openapi_extra=audited("organization.updated"))
async def set_policy(body: LoginPolicyUpdate, call: OrgCall = Depends(org_call)) -> dict[str, Any]:
    return await _identity(call).login_policy(call.org_id, body.require_mfa)
