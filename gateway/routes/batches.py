"""OpenAI's Batches API (`client.batches.*`): create over an uploaded file, retrieve,
list, cancel; scoped to the key's project. The lines run in every gateway replica's
runner (``forge.batches.runner``); this is the HTTP shell."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Depends, Query

from forge.batches.objects import BatchObject, CreateBatch
from forge.batches.store import BatchStore
from forge.errors import NotFound
from forge.keys import KeyInfo
from forge.tenancy.objects import Page
from gateway.deps import caller, runtime
from gateway.errors import unavailable_on
from gateway.runtime import GatewayRuntime

router = APIRouter(tags=["batches"])
T = TypeVar("T")


def _store(rt: GatewayRuntime) -> BatchStore:
    if rt.batches is None:
        raise NotFound("Batches are not enabled on this platform.")
    return rt.batches


def _db(call: Awaitable[T]) -> Awaitable[T]:
    return unavailable_on(call, "Batches")


@router.post("/v1/batches", response_model=BatchObject)
async def create_batch(
    body: CreateBatch, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> BatchObject:
    batch = await _db(_store(rt).create(key.org_id, key.project_id, key.id, body))
    if rt.batch_runner is not None:
        rt.batch_runner.wake()
    return batch


@router.get("/v1/batches", response_model=Page[BatchObject])
async def list_batches(
    after: str | None = Query(None, max_length=40),
    limit: int = Query(20, ge=1, le=100),
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> Page[BatchObject]:
    return await _db(_store(rt).list(key.project_id, after, limit))


@router.get("/v1/batches/{batch_id}", response_model=BatchObject)
async def retrieve_batch(
    batch_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> BatchObject:
    return await _db(_store(rt).get(batch_id, key.project_id))


@router.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject)
async def cancel_batch(
    batch_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> BatchObject:
    return await _db(_store(rt).cancel(batch_id, key.project_id))
