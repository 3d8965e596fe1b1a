"""Admin routes: API keys and LoRA adapters. Admin keys only."""

from __future__ import annotations

import contextlib
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forge.adapters import AdapterInfo, AdapterSpec, adapter_ref
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


class AdapterLoaded(AdapterInfo):
    replica_adapters: list[str] = Field(
        description="The adapters the replica that loaded this one now holds, it included."
    )


@router.post(
    "/adapters",
    response_model=AdapterLoaded,
    status_code=201,
    openapi_extra=audited("resource.created"),
)
async def load_adapter(
    req: LoadAdapterRequest, _: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> AdapterLoaded:
    """Register an adapter and load it on a replica now; no restart. The registration
    comes first (its time is part of the adapter's version, so replicas holding an older
    registration of the name reload); one whose load fails (unreachable, not LoRA,
    another base's shapes) is removed again: a bad adapter is refused, not stored."""
    base = rt.router.model(req.model)
    provider = next(p for p in rt.config.providers if p.name == base.provider)
    if provider.type not in GENERATIVE_TYPES or provider.max_adapters == 0:
        raise InvalidRequest(f"The model {base.name!r} serves no adapters.", param="model")
    if req.name in {m.name for m in rt.router.models}:
        raise Conflict(f"{req.name!r} is already a model's name.", param="name")
    try:
        spec = AdapterSpec(name=req.name, base_model=base.name, source=req.source)
    except ValidationError as exc:
        raise InvalidRequest(exc.errors()[0]["msg"], param="source") from None
    existing = await rt.directory.get_adapter(spec.name)
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
                await rt.directory.delete_adapter(spec.name, info.created_at)
        raise as_forge_error(exc) from None
    finally:
        if rt.adapters is not None:
            rt.adapters.forget(spec.name)
    return AdapterLoaded(**info.model_dump(), replica_adapters=loaded)


@router.get("/adapters", response_model=list[AdapterInfo])
async def list_adapters(
    _: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> list[AdapterInfo]:
    return await rt.directory.list_adapters()


@router.delete("/adapters/{name}", status_code=204, openapi_extra=audited("resource.deleted"))
async def delete_adapter(
    name: str, _: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> None:
    """Unregister: new requests get 404 (within the gateways' 5 s cache); replicas drop
    it from their LRU in time."""
    await rt.directory.delete_adapter(name)
    if rt.adapters is not None:
        rt.adapters.forget(name)
