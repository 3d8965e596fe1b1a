"""OpenAI's Files API (`client.files.*`): upload (multipart, streamed to storage and
validated for its purpose), list, retrieve, content, delete; scoped to the key's project.
The logic is ``forge.files``; this module is the HTTP shell."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response, StreamingResponse

from forge.errors import NotFound
from forge.files.store import FileDeleted, FileObject, FileStore
from forge.keys import KeyInfo
from forge.tenancy.objects import Page
from gateway.deps import caller, runtime
from gateway.errors import unavailable_on
from gateway.runtime import GatewayRuntime

router = APIRouter()
T = TypeVar("T")


def _store(rt: GatewayRuntime, file_id: str | None = None) -> FileStore:
    if rt.files is None:
        raise NotFound(f"No such File object: {file_id}" if file_id else "Files are not enabled.")
    return rt.files


def _db(call: Awaitable[T]) -> Awaitable[T]:
    return unavailable_on(call, "Files")


@router.post("/v1/files", response_model=FileObject)
async def upload_file(
    request: Request,
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> FileObject:
    store = _store(rt)
    content_type = request.headers.get("content-type", "")
    return await _db(store.upload(key.org_id, key.project_id, content_type, request.stream()))


@router.get("/v1/files", response_model=Page[FileObject])
async def list_files(
    purpose: str | None = Query(None, max_length=32),
    limit: int = Query(10000, ge=1, le=10000),
    after: str | None = Query(None, max_length=40),
    order: Literal["asc", "desc"] = "desc",
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> Page[FileObject]:
    store = _store(rt)
    return await _db(store.list(key.project_id, purpose, limit, after, order))


@router.get("/v1/files/{file_id}", response_model=FileObject)
async def retrieve_file(
    file_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> FileObject:
    return await _db(_store(rt, file_id).get(file_id, key.project_id))


@router.get("/v1/files/{file_id}/content")
async def file_content(
    file_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> Response:
    meta, blocks = await _db(_store(rt, file_id).content(file_id, key.project_id))
    headers: dict[str, Any] = {
        "content-length": str(meta.bytes),
        "content-disposition": f'attachment; filename="{_quoted(meta.filename)}"',
    }
    return StreamingResponse(blocks, media_type="application/octet-stream", headers=headers)


@router.delete("/v1/files/{file_id}", response_model=FileDeleted)
async def delete_file(
    file_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> FileDeleted:
    return await _db(_store(rt, file_id).delete(file_id, key.project_id))


def _quoted(name: str) -> str:
    """A filename safe inside a quoted header parameter."""
    return "".join(c if c.isprintable() and c not in '"\\' and ord(c) < 128 else "_" for c in name)
