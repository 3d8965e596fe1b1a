"""SCIM 2.0 at ``/scim/v2`` (RFC 7644): an organisation's identity provider provisions
its people and groups with the organisation's SCIM token (``/v1/organization/
scim_tokens``). Bodies and errors are SCIM's (``application/scim+json``); each change is
in the audit log; deactivating or deleting a person ends their sessions and revokes
their keys on every replica at once."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from forge.audit.store import AuditEvent
from forge.identity.scim import Changed, ScimError, ScimStore, page_bounds
from gateway.auth import presented_key
from gateway.runtime import GatewayRuntime

router = APIRouter(prefix="/scim/v2", tags=["scim"])
MEDIA = "application/scim+json"


class ScimCall:
    def __init__(self, request: Request, rt: GatewayRuntime, store: ScimStore, org_id: str) -> None:
        self.request, self.rt, self.store, self.org_id = request, rt, store, org_id

    async def body(self) -> dict[str, Any]:
        try:
            body = orjson.loads(await self.request.body())
        except orjson.JSONDecodeError:
            raise ScimError(400, "The body is not JSON.", "invalidSyntax") from None
        if not isinstance(body, dict):
            raise ScimError(400, "The body must be a JSON object.", "invalidSyntax")
        return body

    async def audit(self, event: str, target: str, changed: Changed | None = None) -> None:
        """The change in the audit log; a deactivation's sessions and keys ended."""
        if changed is not None:
            if changed.revoked_keys:
                await self.rt.keys_changed(changed.revoked_keys)
            if self.rt.identity is not None:
                for user_id in changed.deactivated:
                    await self.rt.identity.revoke_user(user_id)
        if self.rt.audit is not None:
            await self.rt.audit.append(
                AuditEvent(
                    type=event,
                    org_id=self.org_id,
                    actor={"type": "scim", "scim": {"source": "identity_provider"}},
                    details={"id": target, "via": "scim"},
                    source_ip=self.request.client.host if self.request.client else None,
                    result={"status": 200},
                )
            )


async def scim_call(request: Request) -> ScimCall:
    rt: GatewayRuntime = request.app.state.runtime
    if rt.scim is None:
        raise ScimError(404, "SCIM is not enabled on this platform.")
    return ScimCall(request, rt, rt.scim, await rt.scim.org_of(presented_key(request)))


def scim_json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=MEDIA)


async def scim_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ScimError)
    return scim_json(exc.body(), exc.status)


@router.get("/ServiceProviderConfig")
async def service_provider_config(call: ScimCall = Depends(scim_call)) -> JSONResponse:
    return scim_json(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": 200},
            "changePassword": {"supported": False},
            "sort": {"supported": False},
            "etag": {"supported": False},
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "Bearer token",
                    "primary": True,
                    "description": "The organisation's SCIM token.",
                }
            ],
        }
    )


@router.get("/Users")
async def list_users(
    filter: str | None = Query(None, max_length=500),
    startIndex: int | None = Query(None),
    count: int | None = Query(None),
    call: ScimCall = Depends(scim_call),
) -> JSONResponse:
    start, size = page_bounds(startIndex, count)
    return scim_json(await call.store.list_users(call.org_id, filter, start, size))


@router.get("/Users/{user_id}")
async def get_user(user_id: str, call: ScimCall = Depends(scim_call)) -> JSONResponse:
    return scim_json(await call.store.get_user(call.org_id, user_id))


@router.post("/Users")
async def create_user(call: ScimCall = Depends(scim_call)) -> JSONResponse:
    user = await call.store.create_user(call.org_id, await call.body())
    await call.audit("user.added", user["id"])
    return scim_json(user, 201)


@router.put("/Users/{user_id}")
async def replace_user(user_id: str, call: ScimCall = Depends(scim_call)) -> JSONResponse:
    user, changed = await call.store.replace_user(call.org_id, user_id, await call.body())
    await call.audit("user.updated", user_id, changed)
    return scim_json(user)


@router.patch("/Users/{user_id}")
async def patch_user(user_id: str, call: ScimCall = Depends(scim_call)) -> JSONResponse:
    user, changed = await call.store.patch_user(call.org_id, user_id, await call.body())
    await call.audit("user.updated", user_id, changed)
    return scim_json(user)


@router.delete("/Users/{user_id}", status_code=204)
async def delete_user(user_id: str, call: ScimCall = Depends(scim_call)) -> Response:
    changed = await call.store.delete_user(call.org_id, user_id)
    await call.audit("user.deleted", user_id, changed)
    return Response(status_code=204)


@router.get("/Groups")
async def list_groups(
    filter: str | None = Query(None, max_length=500),
    startIndex: int | None = Query(None),
    count: int | None = Query(None),
    call: ScimCall = Depends(scim_call),
) -> JSONResponse:
    start, size = page_bounds(startIndex, count)
    return scim_json(await call.store.list_groups(call.org_id, filter, start, size))


@router.get("/Groups/{group_id}")
async def get_group(group_id: str, call: ScimCall = Depends(scim_call)) -> JSONResponse:
    return scim_json(await call.store.get_group(call.org_id, group_id))


@router.post("/Groups")
async def create_group(call: ScimCall = Depends(scim_call)) -> JSONResponse:
    group = await call.store.create_group(call.org_id, await call.body())
    await call.audit("group.created", group["id"])
    return scim_json(group, 201)


@router.put("/Groups/{group_id}")
async def replace_group(group_id: str, call: ScimCall = Depends(scim_call)) -> JSONResponse:
    group = await call.store.replace_group(call.org_id, group_id, await call.body())
    await call.audit("group.updated", group_id)
    return scim_json(group)


@router.patch("/Groups/{group_id}")
async def patch_group(group_id: str, call: ScimCall = Depends(scim_call)) -> JSONResponse:
    group = await call.store.patch_group(call.org_id, group_id, await call.body())
    await call.audit("group.updated", group_id)
    return scim_json(group)


@router.delete("/Groups/{group_id}", status_code=204)
async def delete_group(group_id: str, call: ScimCall = Depends(scim_call)) -> Response:
    await call.store.delete_group(call.org_id, group_id)
    await call.audit("group.deleted", group_id)
    return Response(status_code=204)
