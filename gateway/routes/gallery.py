"""The model gallery (our paths; OpenAI has none): fine-tuned models that organisations
published, to browse, rate, and deploy into one's own project with one call. Reads and
ratings are the database's (this replica); a deploy copies the adapter, which the job
manager does."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from forge.finetune.gallery import GalleryModel, GalleryStore, InstallBody, Rating, RatingBody
from forge.keys import KeyInfo
from gateway.deps import caller, runtime
from gateway.routes.fine_tuning import answer, forget_adapters, jobs_of, manager_of
from gateway.runtime import GatewayRuntime

router = APIRouter(tags=["gallery"])
GALLERY = "/v1/gallery/models"


def _gallery(rt: GatewayRuntime) -> GalleryStore:
    return GalleryStore(jobs_of(rt).sessions)


@router.get(GALLERY)
async def browse(
    base_model: str | None = Query(None, max_length=200),
    limit: int = Query(100, ge=1, le=100),
    _: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> dict[str, Any]:
    """Published models (``base_model``: of one base), best rated first."""
    models = await answer(_gallery(rt).browse(base_model, limit))
    return {"object": "list", "data": [m.model_dump() for m in models], "has_more": False}


@router.get(GALLERY + "/{name}", response_model=GalleryModel)
async def entry(
    name: str, _: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> GalleryModel:
    return await answer(_gallery(rt).entry(name))


@router.get(GALLERY + "/{name}/ratings")
async def ratings(
    name: str, _: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> dict[str, Any]:
    found: list[Rating] = await answer(_gallery(rt).ratings(name))
    return {"object": "list", "data": [r.model_dump() for r in found], "has_more": False}


@router.post(GALLERY + "/{name}/ratings", response_model=GalleryModel)
async def rate(
    name: str,
    body: RatingBody,
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> GalleryModel:
    """The caller's organisation's rating (one per organisation; again: replaced)."""
    return await answer(_gallery(rt).rate(name, key.org_id, body))


@router.post(GALLERY + "/{name}/deploy")
async def deploy(
    name: str,
    body: InstallBody | None = None,
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> dict[str, Any]:
    """A copy into the caller's project, answering under its alias at once."""
    asked = {} if body is None else body.model_dump(exclude_unset=True)
    installed = await answer(manager_of(rt).install(name, key.org_id, key.project_id, asked))
    forget_adapters(rt)
    return installed


@router.post(GALLERY + "/{name}/undeploy")
async def undeploy(
    name: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> dict[str, Any]:
    removed = await answer(manager_of(rt).uninstall(name, key.org_id, key.project_id))
    forget_adapters(rt)
    return removed
