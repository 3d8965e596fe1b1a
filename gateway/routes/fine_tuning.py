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
from forge.finetune.gallery import ShareBody
from forge.finetune.learning import LearningBody
from forge.finetune.manager import JobManager
from forge.finetune.objects import CreateJob, JobObject, ListOf
from forge.finetune.store import JobStore
from forge.keys import KeyInfo
from gateway.deps import caller, runtime
from gateway.errors import unavailable_on
from gateway.runtime import GatewayRuntime

router = APIRouter(tags=["fine-tuning"])
T = TypeVar("T")
PUBLISHERS = frozenset({"admin", "platform"})  # roles whose keys may publish to the gallery
JOBS = "/v1/fine_tuning/jobs"
MODELS = "/v1/fine_tuning/models"


def manager_of(rt: GatewayRuntime) -> JobManager:
    if rt.fine_tuning is None:
        raise NotFound("Fine-tuning is not enabled on this platform.")
    return rt.fine_tuning


def jobs_of(rt: GatewayRuntime) -> JobStore:
    """Reads go to the database from this replica: polling a job costs the manager
    nothing, and works while it restarts."""
    if rt.fine_tuning_jobs is None:
        raise NotFound("Fine-tuning is not enabled on this platform.")
    return rt.fine_tuning_jobs


def answer(call: Awaitable[T]) -> Awaitable[T]:
    """The manager restarting (its actor recovering the jobs) or the database away is a
    503 to retry, not a 500."""
    return unavailable_on(call, "Fine-tuning jobs", (RayActorError, SQLAlchemyError))


def forget_adapters(rt: GatewayRuntime) -> None:
    """A deploy or undeploy: this replica's cached misses and hits of adapter names go."""
    if rt.visible_adapters is not None:
        rt.visible_adapters.forget()


@router.post(JOBS, response_model=JobObject)
async def create_job(
    body: CreateJob, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JobObject:
    job = await answer(
        manager_of(rt).create(key.org_id, key.project_id, body.model_dump(exclude_unset=True))
    )
    if body.deploy:
        forget_adapters(rt)
    return job


@router.get(JOBS, response_model=ListOf)
async def list_jobs(
    request: Request,
    after: str | None = Query(None, max_length=40),
    limit: int = Query(20, ge=1, le=100),
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> ListOf:
    return await answer(jobs_of(rt).list(key.project_id, after, limit, _metadata_filter(request)))


@router.get(JOBS + "/{job_id}", response_model=JobObject)
async def retrieve_job(
    job_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JobObject:
    return await answer(jobs_of(rt).get(job_id, key.project_id))


@router.post(JOBS + "/{job_id}/cancel", response_model=JobObject)
async def cancel_job(
    job_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JobObject:
    return await answer(manager_of(rt).cancel(job_id, key.project_id))


@router.post(JOBS + "/{job_id}/pause", response_model=JobObject)
async def pause_job(
    job_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JobObject:
    return await answer(manager_of(rt).pause(job_id, key.project_id))


@router.post(JOBS + "/{job_id}/resume", response_model=JobObject)
async def resume_job(
    job_id: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> JobObject:
    return await answer(manager_of(rt).resume(job_id, key.project_id))


@router.get(JOBS + "/{job_id}/events", response_model=ListOf)
async def job_events(
    job_id: str,
    after: str | None = Query(None, max_length=40),
    limit: int = Query(20, ge=1, le=100),
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> ListOf:
    return await answer(jobs_of(rt).events(job_id, key.project_id, after, limit))


@router.get(JOBS + "/{job_id}/checkpoints", response_model=ListOf)
async def job_checkpoints(
    job_id: str,
    after: str | None = Query(None, max_length=40),
    limit: int = Query(10, ge=1, le=100),
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> ListOf:
    return await answer(jobs_of(rt).checkpoints(job_id, key.project_id, after, limit))


@router.get(MODELS)
async def list_versions(
    suffix: str | None = Query(None, max_length=64),
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> dict[str, Any]:
    """The project's fine-tuned models and those its organisation's other projects
    shared (``suffix``: the versions of one suffix), newest first."""
    data = await answer(manager_of(rt).versions(key.project_id, suffix, key.org_id))
    return {"object": "list", "data": data, "has_more": False}


@router.post(MODELS + "/{name}/learning")
async def learn_from_use(
    name: str,
    body: LearningBody,
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> dict[str, Any]:
    """Opt the model's suffix in to learning from use (or out, or change the policy):
    its stable name then serves this version and collects what it is asked."""
    policy = await answer(
        manager_of(rt).learn(name, key.project_id, body.model_dump(exclude_unset=True))
    )
    forget_adapters(rt)
    if rt.relay.learning is not None:
        rt.relay.learning.forget()
    return policy


@router.get(MODELS + "/{name}/learning")
async def learning_status(
    name: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> dict[str, Any]:
    return await answer(manager_of(rt).learning(name, key.project_id))


@router.post(MODELS + "/{name}/share")
async def share_model(
    name: str,
    body: ShareBody,
    key: KeyInfo = Depends(caller),
    rt: GatewayRuntime = Depends(runtime),
) -> dict[str, Any]:
    """Share with the organisation, publish to the gallery, or take back to the project."""
    publisher = key.role in PUBLISHERS
    version = await answer(
        manager_of(rt).share(name, key.project_id, body.model_dump(exclude_unset=True), publisher)
    )
    forget_adapters(rt)
    return version


@router.post(MODELS + "/{name}/deploy")
async def deploy_model(
    name: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> dict[str, Any]:
    version = await answer(manager_of(rt).deploy(name, key.project_id))
    forget_adapters(rt)
    return version


@router.post(MODELS + "/{name}/undeploy")
async def undeploy_model(
    name: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> dict[str, Any]:
    version = await answer(manager_of(rt).undeploy(name, key.project_id))
    forget_adapters(rt)
    return version


@router.delete(MODELS + "/{name}")
async def delete_model(
    name: str, key: KeyInfo = Depends(caller), rt: GatewayRuntime = Depends(runtime)
) -> dict[str, Any]:
    deleted = await answer(manager_of(rt).delete_version(name, key.project_id))
    forget_adapters(rt)
    return deleted


def _metadata_filter(request: Request) -> dict[str, str] | None:
    """``metadata[k]=v`` query parameters (how the SDKs send a metadata filter)."""
    wanted = {
        k[len("metadata[") : -1]: v
        for k, v in request.query_params.items()
        if k.startswith("metadata[") and k.endswith("]")
    }
    return wanted or None
