"""``/v1/organization/invites``: invitations, and accepting one.

OpenAI's invitations go out by email and are accepted in its web app. Here the new
invitation carries its secret (``token``, shown once) for the inviter to pass on, and
``POST /v1/organization/invites/accept`` (the token is the credential: no key) makes the
person a member and gives them their first admin API key, which acts with their role.
Sign-in for people comes later (sessions, SSO).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from forge.errors import ServiceUnavailable
from forge.keys import KeyInfo
from forge.people.objects import Accepted, InviteCreated, InviteObject, InviteProject
from forge.people.permissions import OrgRoleName
from forge.tenancy.objects import Deleted, Page
from gateway.audit import AuditedRoute, audited
from gateway.deps import runtime
from gateway.permissions import in_plan
from gateway.routes.organization.scope import OrgCall, Paging, org_call
from gateway.runtime import GatewayRuntime

router = APIRouter(prefix="/invites", tags=["organization"], route_class=AuditedRoute)


class InviteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320)
    role: OrgRoleName
    projects: list[InviteProject] | None = None


class AcceptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)
    name: str | None = Field(None, min_length=1, max_length=200)


@router.get("", response_model=Page[InviteObject])
async def list_invites(
    paging: Paging = Depends(), call: OrgCall = Depends(org_call)
) -> Page[InviteObject]:
    return await call.people.list_invites(call.org_id, paging.limit, paging.after)


@router.post(
    "", response_model=InviteCreated, openapi_extra={**in_plan("teams"), **audited("invite.sent")}
)
async def create_invite(body: InviteRequest, call: OrgCall = Depends(org_call)) -> InviteCreated:
    return await call.people.create_invite(
        call.org_id, body.email, body.role, body.projects, call.held
    )


@router.post("/accept", response_model=Accepted, openapi_extra=audited("invite.accepted"))
async def accept_invite(
    body: AcceptRequest, request: Request, rt: GatewayRuntime = Depends(runtime)
) -> Accepted:
    if rt.people is None:
        raise ServiceUnavailable("The people store is not configured.", retry_after=5)
    org_id, user, key = await rt.people.accept_invite(body.token, body.name)
    # the audit entry's actor: the new member's key
    request.state.caller = KeyInfo.model_validate(key.info.model_dump())
    request.state.org_id = org_id
    return Accepted(user=user, api_key=key.key, api_key_id=key.info.id)


@router.get("/{invite_id}", response_model=InviteObject)
async def get_invite(invite_id: str, call: OrgCall = Depends(org_call)) -> InviteObject:
    return await call.people.get_invite(call.org_id, invite_id)


@router.delete("/{invite_id}", response_model=Deleted, openapi_extra=audited("invite.deleted"))
async def delete_invite(invite_id: str, call: OrgCall = Depends(org_call)) -> Deleted:
    await call.people.delete_invite(call.org_id, invite_id)
    return Deleted(object="organization.invite.deleted", id=invite_id)
