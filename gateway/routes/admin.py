"""Admin routes: API keys. Admin keys only."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from forge.keys import CreatedKey, KeyInfo
from gateway.deps import admin, runtime
from gateway.runtime import GatewayRuntime

router = APIRouter(prefix="/admin")


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "user"] = "user"


@router.post("/keys", response_model=CreatedKey, status_code=201)
async def create_key(
    req: CreateKeyRequest, _: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> CreatedKey:
    return await rt.directory.create_key(req.name, req.role)


@router.get("/keys", response_model=list[KeyInfo])
async def list_keys(
    _: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> list[KeyInfo]:
    return await rt.directory.list_keys()


@router.delete("/keys/{key_id}", response_model=KeyInfo)
async def revoke_key(
    key_id: str, _: KeyInfo = Depends(admin), rt: GatewayRuntime = Depends(runtime)
) -> KeyInfo:
    info = await rt.directory.revoke_key(key_id)
    rt.verifier.forget(key_id)
    return info
