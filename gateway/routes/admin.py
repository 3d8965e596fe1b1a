"""Admin routes: API keys and LoRA adapters. Admin keys only."""

from __future__ import annotations

import contextlib
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge.adapters import AdapterInfo, AdapterNotFound, AdapterSpec, adapter_ref
from forge.config import GENERATIVE_TYPES
from forge.errors import Conflict, InvalidRequest
from forge.keys import CreatedKey, KeyInfo, person_of
from gateway.audit import AuditedRoute, audited
from gateway.deps import admin, runtime
from gateway.relay import as_forge_error
from gateway.runtime import GatewayRuntime

router = APIRouter(prefix="/admin", route_class=AuditedRoute)


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "user"] = "user"
    project_id: str | None = Field(
        None, description="A project of the caller's organization; default: its default one."
    )
    allowed_models: list[str] | None = Field(
        None, description="Only these models (default: every model its project may use)."
    )
    allowed_endpoints: list[str] | None = Field(
        None, description="Only these endpoints, e.g. /v1/chat/completions (default: all)."
    )


def _org_scope(caller: KeyInfo) -> str | None:
    """The organisation an ``/admin/keys`` call sees: the caller's (the operator's: all)."""
    return None if caller.role == "platform" else caller.org_id


@router.post(
    "/keys", response_model=CreatedKey, status_code=201, openapi_extra=audited("api_key.created")
)
async def create_key(
    req: CreateKeyRequest, caller: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> CreatedKey:
    """A key in the caller's organisation: in ``project_id`` (checked to be one of its
    projects), else in the project of the caller's key. The Admin API's service accounts
    and admin keys (``/v1/organization``) are the OpenAI-shaped way to the same."""
    project_id = caller.project_id
    if req.project_id is not None and rt.tenancy is not None:
        project_id = (await rt.tenancy.get_project(caller.org_id, req.project_id)).id
    return await rt.directory.create_key(
        req.name,
        req.role,
        org_id=caller.org_id,
        project_id=project_id,
        owner_user_id=person_of(caller),
        allowed_models=req.allowed_models,
        allowed_endpoints=req.allowed_endpoints,
    )


@router.get("/keys", response_model=list[KeyInfo])
async def list_keys(
    caller: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> list[KeyInfo]:
    return await rt.directory.list_keys(_org_scope(caller))


@router.delete("/keys/{key_id}", response_model=KeyInfo, openapi_extra=audited("api_key.deleted"))
async def revoke_key(
    key_id: str, caller: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> KeyInfo:
    info = await rt.directory.revoke_key(key_id, _org_scope(caller))
    await rt.keys_changed([key_id])
    return info


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        pattern=r"^[\w.-]+$",
        max_length=100,
        description="The adapter's name: clients send `<model>:<name>` or just `<name>`.",
    )
    model: str = Field(description="The self-hosted base model it was trained from.")
    source: str = Field(description="Local directory or fsspec URL of a PEFT LoRA adapter.")
    project_id: str | None = Field(
        None,
        description="Only this project of the caller's organization may use it; default: "
        "the whole organization (the platform operator's adapters: every organization).",
    )


class AdapterLoaded(AdapterInfo):
    replica_adapters: list[str] = Field(
        description="The adapters the replica that loaded this one now holds, it included."
    )


async def _adapter_scope(
    rt: GatewayRuntime, caller: KeyInfo, project_id: str | None
) -> tuple[str | None, str | None]:
    """(organisation, project) an adapter call acts in: the caller's organisation, and
    one of its projects when named (404 for another's); the operator's: the platform."""
    if caller.role == "platform":
        if project_id is not None:
            raise InvalidRequest(
                "The platform's adapters belong to every organization, not to a project.",
                param="project_id",
            )
        return None, None
    if project_id is not None and rt.tenancy is not None:
        project_id = (await rt.tenancy.get_project(caller.org_id, project_id)).id
    return caller.org_id, project_id


def _forget_adapter(rt: GatewayRuntime, key: str) -> None:
    if rt.adapters is not None:
        rt.adapters.forget(key)
    if rt.visible_adapters is not None:
        rt.visible_adapters.forget()


@router.post(
    "/adapters",
    response_model=AdapterLoaded,
    status_code=201,
    openapi_extra=audited("resource.created"),
)
async def load_adapter(
    req: LoadAdapterRequest, caller: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> AdapterLoaded:
    """Register an adapter of the caller's organisation (or project) and load it on a
    replica now; no restart. The registration comes first (its time is part of the
    adapter's version, so replicas holding an older registration reload); one whose load
    fails (unreachable, not LoRA, another base's shapes) is removed again: a bad adapter
    is refused, not stored. Another organisation may use the same name for its own."""
    base = rt.router.model(req.model)
    provider = next(p for p in rt.config.providers if p.name == base.provider)
    if provider.type not in GENERATIVE_TYPES or provider.max_adapters == 0:
        raise InvalidRequest(f"The model {base.name!r} serves no adapters.", param="model")
    if req.name in {m.name for m in rt.router.models}:
        raise Conflict(f"{req.name!r} is already a model's name.", param="name")
    org_id, project_id = await _adapter_scope(rt, caller, req.project_id)
    try:
        spec = AdapterSpec(
            name=req.name,
            alias=req.name,
            org_id=org_id,
            project_id=project_id,
            base_model=base.name,
            source=req.source,
        )
    except ValidationError as exc:
        raise InvalidRequest(exc.errors()[0]["msg"], param="source") from None
    existing = await rt.directory.owned_adapter(req.name, org_id, project_id)
    if existing is not None and (existing.base_model, existing.source) != (
        spec.base_model,
        spec.source,
    ):
        raise Conflict(
            f"An adapter named {spec.name!r} already exists with another base model or "
            "source; delete it first.",
            param="name",
        )
    client = rt.router.clients[base.provider]
    info = await rt.directory.register_adapter(spec)
    try:
        view = client.with_adapter(adapter_ref(info))  # type: ignore[attr-defined]
        loaded = await view.load_adapter(info)
    except Exception as exc:
        if existing is None:  # this request stored it: take it back
            with contextlib.suppress(Exception):
                await rt.directory.delete_adapter(info.name, info.created_at)
        raise as_forge_error(exc) from None
    finally:
        _forget_adapter(rt, info.name)
    return AdapterLoaded(**info.model_dump(), replica_adapters=loaded)


@router.get("/adapters", response_model=list[AdapterInfo])
async def list_adapters(
    caller: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> list[AdapterInfo]:
    """The caller's organisation's adapters (every project's) and the platform's; the
    operator's: every one."""
    if caller.role == "platform":
        return await rt.directory.list_adapters()
    return await rt.directory.visible_adapters(caller.org_id, None, True)


@router.delete("/adapters/{name}", status_code=204, openapi_extra=audited("resource.deleted"))
async def delete_adapter(
    name: str,
    project_id: str | None = None,
    caller: KeyInfo = Depends(admin),
    rt: GatewayRuntime = Depends(runtime),
) -> None:
    """Unregister the caller's adapter ``name`` (of ``project_id``, if it was registered
    for one): new requests get 404 (within the gateways' 5 s cache); replicas drop it
    from their LRU in time. Another organisation's is not found."""
    org_id, project_id = await _adapter_scope(rt, caller, project_id)
    found = await rt.directory.owned_adapter(name, org_id, project_id)
    if found is None and caller.role == "platform":  # by its registry key, anyone's
        found = await rt.directory.get_adapter(name)
    if found is None:
        raise AdapterNotFound(f"The adapter {name!r} does not exist.", param="name")
    await rt.directory.delete_adapter(found.name, found.created_at)
    _forget_adapter(rt, found.name)
