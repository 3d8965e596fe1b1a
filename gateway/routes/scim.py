"""SCIM 2.0 at ``/scim/v2`` (RFC 7644): an organisation's identity provider provisions
its people and groups with the organisation's SCIM token (``/v1/organization/
scim_tokens``). Bodies and errors are SCIM's (``application/scim+json``); each change is
in the audit log; deactivating or deleting a person ends their sessions and revokes
their keys on every replica at once."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Kind:
    """A SCIM resource type: its path, the store's methods (``<verb>_<noun>``), and the
    audit events of its changes."""

    path: str
    noun: str
    added: str
    updated: str
    deleted: str


KINDS = (
    Kind("Users", "user", "user.added", "user.updated", "user.deleted"),
    Kind("Groups", "group", "group.created", "group.updated", "group.deleted"),
)


def _add_routes(kind: Kind) -> None:
    """List, get, create, replace, patch and delete of ``kind``, declared once."""

    def store(call: ScimCall, verb: str) -> Any:
        return getattr(call.store, f"{verb}_{kind.noun}")

    @router.get(f"/{kind.path}", name=f"list_{kind.noun}s")
    async def list_all(
        filter: str | None = Query(None, max_length=500),
        startIndex: int | None = Query(None),
        count: int | None = Query(None),
        call: ScimCall = Depends(scim_call),
    ) -> JSONResponse:
        start, size = page_bounds(startIndex, count)
        found = getattr(call.store, f"list_{kind.noun}s")  # the plural: a list
        return scim_json(await found(call.org_id, filter, start, size))

    @router.get(f"/{kind.path}/{{resource_id}}", name=f"get_{kind.noun}")
    async def get_one(resource_id: str, call: ScimCall = Depends(scim_call)) -> JSONResponse:
        return scim_json(await store(call, "get")(call.org_id, resource_id))

    @router.post(f"/{kind.path}", name=f"create_{kind.noun}")
    async def create(call: ScimCall = Depends(scim_call)) -> JSONResponse:
        made = await store(call, "create")(call.org_id, await call.body())
        await call.audit(kind.added, made["id"])
        return scim_json(made, 201)

    async def change(verb: str, resource_id: str, call: ScimCall) -> JSONResponse:
        resource, changed = await store(call, verb)(call.org_id, resource_id, await call.body())
        await call.audit(kind.updated, resource_id, changed)
        return scim_json(resource)

    @router.put(f"/{kind.path}/{{resource_id}}", name=f"replace_{kind.noun}")
    async def replace(resource_id: str, call: ScimCall = Depends(scim_call)) -> JSONResponse:
        return await change("replace", resource_id, call)

    @router.patch(f"/{kind.path}/{{resource_id}}", name=f"patch_{kind.noun}")
    async def patch(resource_id: str, call: ScimCall = Depends(scim_call)) -> JSONResponse:
        return await change("patch", resource_id, call)

    @router.delete(f"/{kind.path}/{{resource_id}}", status_code=204, name=f"delete_{kind.noun}")
    async def remove(resource_id: str, call: ScimCall = Depends(scim_call)) -> Response:
        changed = await store(call, "delete")(call.org_id, resource_id)
        await call.audit(kind.deleted, resource_id, changed)
        return Response(status_code=204)


for _kind in KINDS:
    _add_routes(_kind)
