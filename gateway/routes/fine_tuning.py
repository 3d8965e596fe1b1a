"""OpenAI's fine-tuning API (`client.fine_tuning.jobs.*`): create, list, retrieve,
cancel, pause, resume, events, checkpoints; and the models the jobs made (versions,
deploy, undeploy, delete). Scoped to the key's project. The job manager
(``forge.finetune.manager``, an actor behind Serve) does the work; this is the HTTP
shell."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from ray.exceptions import RayActorError
from sqlalchemy.exc import SQLAlchemyError

from forge.errors import NotFound
from forge.finetune.manager import JobManager
from forge.finetune.objects import CreateJob, JobObject, ListOf
from forge.finetune.store import JobStore
from forge.keys import KeyInfo
from gateway.deps import caller, runtime
from gateway.errors import unavailable_on
from gateway.runtime import GatewayRuntime

router = APIRouter(tags=["fine-tuning"])
T = TypeVar("T")
JOBS = "/v1/fine_tuning/jobs"
MODELS = "/v1/fine_tuning/models"


def _manager(rt: GatewayRuntime) -> JobManager:
    if rt.fine_tuning is None:
        raise NotFound("Fine-tuning is not enabled on this platform.")
    return rt.fine_tuning


def _jobs(rt: GatewayRuntime) -> JobStore:
    """Reads go to the database from this replica: polling a job costs the manager
    nothing, and works while it restarts."""
    if rt.fine_tuning_jobs is None:
        raise NotFound("Fine-tuning is not enabled on this platform.")
    return rt.fine_tuning_jobs


def _answer(call: Awaitable[T]) -> Awaitable[T]:
    """The manager restarting (its actor recovering the jobs) or the database away is a
    503 to retry, not a 500."""
    return unavailable_on(call, "Fine-tuning jobs", (RayActorError, SQLAlchemyError))


def _forget(rt: GatewayRuntime) -> None:
    """A deploy or undeploy: this replica's cached misses and hits of adapter names go."""
    if rt.visible_adapters is not None:
        rt.visible_adapters.forget()


@router.post(JOBS, response_model=JobObject)
async def create_job(
    body: CreateJob, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JobObject:
    job = await _answer(
        _manager(rt).create(key.org_id, key.project_id, body.model_dump(exclude_unset=True))
    )
    if body.deploy:
        _forget(rt)
    return job


@router.get(JOBS, response_model=ListOf)
async def list_jobs(
    request: Request,
    after: str | None = Query(None, max_length=40),
    limit: int = Query(20, ge=1, le=100),
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> ListOf:
    return await _answer(_jobs(rt).list(key.project_id, after, limit, _metadata_filter(request)))


@router.get(JOBS + "/{job_id}", response_model=JobObject)
async def retrieve_job(
    job_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JobObject:
    return await _answer(_jobs(rt).get(job_id, key.project_id))


@router.post(JOBS + "/{job_id}/cancel", response_model=JobObject)
async def cancel_job(
    job_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JobObject:
    return await _answer(_manager(rt).cancel(job_id, key.project_id))


@router.post(JOBS + "/{job_id}/pause", response_model=JobObject)
async def pause_job(
    job_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JobObject:
    return await _answer(_manager(rt).pause(job_id, key.project_id))


@router.post(JOBS + "/{job_id}/resume", response_model=JobObject)
async def resume_job(
    job_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JobObject:
    return await _answer(_manager(rt).resume(job_id, key.project_id))


@router.get(JOBS + "/{job_id}/events", response_model=ListOf)
async def job_events(
    job_id: str,
    after: str | None = Query(None, max_length=40),
    limit: int = Query(20, ge=1, le=100),
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> ListOf:
    return await _answer(_jobs(rt).events(job_id, key.project_id, after, limit))


@router.get(JOBS + "/{job_id}/checkpoints", response_model=ListOf)
async def job_checkpoints(
    job_id: str,
    after: str | None = Query(None, max_length=40),
    limit: int = Query(10, ge=1, le=100),
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> ListOf:
    return await _answer(_jobs(rt).checkpoints(job_id, key.project_id, after, limit))


@router.get(MODELS)
async def list_versions(
    suffix: str | None = Query(None, max_length=64),
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> dict[str, Any]:
    """The project's fine-tuned models (``suffix``: the versions of one suffix), newest
    first."""
    data = await _answer(_manager(rt).versions(key.project_id, suffix))
    return {"object": "list", "data": data, "has_more": False}


@router.post(MODELS + "/{name}/deploy")
async def deploy_model(
    name: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> dict[str, Any]:
    version = await _answer(_manager(rt).deploy(name, key.project_id))
    _forget(rt)
    return version


@router.post(MODELS + "/{name}/undeploy")
async def undeploy_model(
    name: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> dict[str, Any]:
    version = await _answer(_manager(rt).undeploy(name, key.project_id))
    _forget(rt)
    return version


@router.delete(MODELS + "/{name}")
async def delete_model(
    name: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> dict[str, Any]:
    deleted = await _answer(_manager(rt).delete_version(name, key.project_id))
    _forget(rt)
    return deleted


def _metadata_filter(request: Request) -> dict[str, str] | None:
    """``metadata[k]=v`` query parameters (how the SDKs send a metadata filter)."""
    wanted = {
        k[len("metadata[") : -1]: v
        for k, v in request.query_params.items()
        if k.startswith("metadata[") and k.endswith("]")
    }
    return wanted or None
