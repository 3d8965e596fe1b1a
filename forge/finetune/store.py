"""Fine-tuning jobs in the database: the jobs, their events (ordered by ``seq``), their
checkpoints, and the model versions succeeded jobs made. A job belongs to the project of
the key that created it; to every other project it does not exist (404)."""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import (
    FineTuneCheckpoint,
    FineTuneEvent,
    FineTuneJob,
    ModelVersion,
    Organization,
    utcnow,
)
from forge.errors import InvalidRequest, NotFound
from forge.finetune.objects import (
    CheckpointObject,
    EventObject,
    JobError,
    JobObject,
    ListOf,
    ResolvedHyperparameters,
)
from forge.finetune.plan import checkpoint_name
from forge.tenancy.objects import unix
from forge.tenancy.paging import check_limit, page_rows
from forge.webhooks.events import Event

Emit = Callable[[str, Event, AsyncSession], Awaitable[int]]
WEBHOOK_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def job_object(row: FineTuneJob) -> JobObject:
    settings = json.loads(row.settings)
    hyper = ResolvedHyperparameters(**settings["hyperparameters"])
    return JobObject(
        id=row.id,
        created_at=unix(row.created_at) or 0,
        error=JobError(**json.loads(row.error)) if row.error else None,
        fine_tuned_model=row.fine_tuned_model,
        finished_at=unix(row.finished_at),
        hyperparameters=hyper,
        model=row.model,
        organization_id=row.org_id,
        result_files=json.loads(row.result_files) if row.result_files else [],
        seed=row.seed,
        status=row.status,
        trained_tokens=row.trained_tokens,
        training_file=row.training_file,
        validation_file=row.validation_file,
        estimated_finish=unix(row.estimated_finish),
        metadata=json.loads(row.job_metadata) if row.job_metadata else None,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {**hyper.model_dump(), **settings["lora_api"]}},
        },
        suffix=row.suffix,
        priority=row.priority,
    )


def event_object(row: FineTuneEvent) -> EventObject:
    return EventObject(
        id=row.id,
        created_at=unix(row.created_at) or 0,
        level=row.level,
        message=row.message,
        type=row.type,
        data=json.loads(row.data) if row.data else {},
    )


class JobStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], emit: Emit | None = None
    ) -> None:
        self._sessions = sessions
        self._emit = emit

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self._sessions

    # -- jobs -----------------------------------------------------------------------------

    async def add(self, row: FineTuneJob, message: str) -> FineTuneJob:
        async with self._sessions.begin() as s:
            s.add(row)
            await s.flush()
            await self._event(s, row.id, "info", message)
        return row

    async def row(self, job_id: str, project_id: str | None = None) -> FineTuneJob:
        """The job (of ``project_id``, when given: another project's is a 404)."""
        async with self._sessions() as s:
            row = await s.get(FineTuneJob, job_id)
        if row is None or (project_id is not None and row.project_id != project_id):
            raise NotFound(f"Fine-tuning job {job_id!r} not found.", param="fine_tuning_job_id")
        return row

    async def get(self, job_id: str, project_id: str) -> JobObject:
        return job_object(await self.row(job_id, project_id))

    async def list(
        self, project_id: str, after: str | None, limit: int, metadata: dict[str, str] | None
    ) -> ListOf:
        where: builtins.list[Any] = [FineTuneJob.project_id == project_id]
        async with self._sessions() as s:
            if metadata:  # few jobs carry metadata; filtered here, paged by the database
                rows, more = await page_rows(s, FineTuneJob, where, 100, after, "desc")
                rows = [r for r in rows if _has_metadata(r, metadata)][:limit]
            else:
                rows, more = await page_rows(s, FineTuneJob, where, limit, after, "desc")
        return ListOf(data=[job_object(r) for r in rows], has_more=more)

    async def next_queued(self, exclude: set[str]) -> FineTuneJob | None:
        """The queued job to run next: highest priority, then first submitted."""
        query = (
            select(FineTuneJob)
            .where(FineTuneJob.status == "queued", FineTuneJob.id.not_in(exclude or {""}))
            .order_by(FineTuneJob.priority.desc(), FineTuneJob.created_at, FineTuneJob.id)
            .limit(1)
        )
        async with self._sessions() as s:
            return await s.scalar(query)

    async def with_status(self, *statuses: str) -> builtins.list[FineTuneJob]:
        async with self._sessions() as s:
            query = select(FineTuneJob).where(FineTuneJob.status.in_(statuses))
            return list(await s.scalars(query.order_by(FineTuneJob.created_at)))

    async def transition(
        self,
        job_id: str,
        status: str,
        message: str,
        *,
        expect: frozenset[str] | None = None,
        level: str = "info",
        **values: Any,
    ) -> FineTuneJob | None:
        """Move the job to ``status`` (only from one of ``expect``, when given: None if it
        was elsewhere), with an event and, for a finished status, a webhook event, in one
        transaction."""
        async with self._sessions.begin() as s:
            query = update(FineTuneJob).where(FineTuneJob.id == job_id)
            if expect is not None:
                query = query.where(FineTuneJob.status.in_(expect))
            result: Any = await s.execute(query.values(status=status, **values))
            if result.rowcount == 0:
                return None
            await self._event(s, job_id, level, message)
            row = await s.get(FineTuneJob, job_id)
            assert row is not None
            await s.refresh(row)
            if self._emit is not None and status in WEBHOOK_STATUSES:
                event = Event(
                    type=f"fine_tuning.job.{status}",
                    timestamp=utcnow(),
                    data={"id": job_id, "project_id": row.project_id},
                )
                await self._emit(row.org_id, event, s)
            return row

    async def update(self, job_id: str, **values: Any) -> None:
        async with self._sessions.begin() as s:
            await s.execute(update(FineTuneJob).where(FineTuneJob.id == job_id).values(**values))

    async def org_name(self, org_id: str) -> str:
        async with self._sessions() as s:
            name = await s.scalar(select(Organization.name).where(Organization.id == org_id))
        return name or org_id

    # -- events ---------------------------------------------------------------------------

    async def event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        kind: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        async with self._sessions.begin() as s:
            await self._event(s, job_id, level, message, kind, data)

    @staticmethod
    async def _event(
        s: AsyncSession,
        job_id: str,
        level: str,
        message: str,
        kind: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        """The job's next event. One writer (the job manager) per job: max + 1 is safe,
        and the unique (job, seq) says so loudly if that ever stops being true."""
        last = await s.scalar(
            select(func.max(FineTuneEvent.seq)).where(FineTuneEvent.job_id == job_id)
        )
        s.add(
            FineTuneEvent(
                id=new_id("ftevent"),
                job_id=job_id,
                seq=(last or 0) + 1,
                created_at=utcnow(),
                level=level,
                type=kind,
                message=message,
                data=json.dumps(data) if data is not None else None,
            )
        )

    async def events(self, job_id: str, project_id: str, after: str | None, limit: int) -> ListOf:
        """Newest first (OpenAI's order); ``after``: an event id of this job."""
        check_limit(limit)
        await self.row(job_id, project_id)
        async with self._sessions() as s:
            query = select(FineTuneEvent).where(FineTuneEvent.job_id == job_id)
            if after is not None:
                anchor = await s.scalar(
                    select(FineTuneEvent.seq).where(
                        FineTuneEvent.job_id == job_id, FineTuneEvent.id == after
                    )
                )
                if anchor is None:
                    raise InvalidRequest(
                        f"Invalid 'after': {after!r} is not an event of this job.",
                        param="after",
                        code="invalid_value",
                    )
                query = query.where(FineTuneEvent.seq < anchor)
            rows = list(await s.scalars(query.order_by(FineTuneEvent.seq.desc()).limit(limit + 1)))
        return ListOf(data=[event_object(r) for r in rows[:limit]], has_more=len(rows) > limit)

    # -- checkpoints ----------------------------------------------------------------------

    async def add_checkpoint(
        self, job_id: str, step: int, metrics: dict[str, float], location: str, keep: int
    ) -> builtins.list[str]:
        """Record a checkpoint; forget all but the newest ``keep``. Returns the forgotten
        ones' locations (the caller removes them)."""
        async with self._sessions.begin() as s:
            s.add(
                FineTuneCheckpoint(
                    id=new_id("ftckpt"),
                    job_id=job_id,
                    step=step,
                    metrics=json.dumps(metrics),
                    location=location,
                    created_at=utcnow(),
                )
            )
            await s.flush()
            rows = list(
                await s.scalars(
                    select(FineTuneCheckpoint)
                    .where(FineTuneCheckpoint.job_id == job_id)
                    .order_by(FineTuneCheckpoint.step.desc())
                )
            )
            old = rows[keep:]
            if old:
                await s.execute(
                    delete(FineTuneCheckpoint).where(FineTuneCheckpoint.id.in_([r.id for r in old]))
                )
            return [r.location for r in old if r.location not in {k.location for k in rows[:keep]}]

    async def latest_checkpoint(self, job_id: str) -> FineTuneCheckpoint | None:
        async with self._sessions() as s:
            return await s.scalar(
                select(FineTuneCheckpoint)
                .where(FineTuneCheckpoint.job_id == job_id)
                .order_by(FineTuneCheckpoint.step.desc())
                .limit(1)
            )

    async def checkpoints(
        self, job_id: str, project_id: str, after: str | None, limit: int
    ) -> ListOf:
        """Newest first; named after the job's model (``…:ckpt-step-N``)."""
        check_limit(limit)
        job = await self.row(job_id, project_id)
        base = job.fine_tuned_model or json.loads(job.settings)["model_name"]
        async with self._sessions() as s:
            rows = list(
                await s.scalars(
                    select(FineTuneCheckpoint)
                    .where(FineTuneCheckpoint.job_id == job_id)
                    .order_by(FineTuneCheckpoint.step.desc())
                )
            )
        if after is not None:
            ids = [r.id for r in rows]
            if after not in ids:
                raise InvalidRequest(
                    f"Invalid 'after': {after!r} is not a checkpoint of this job.",
                    param="after",
                    code="invalid_value",
                )
            rows = rows[ids.index(after) + 1 :]
        data = [
            CheckpointObject(
                id=r.id,
                created_at=unix(r.created_at) or 0,
                fine_tuned_model_checkpoint=checkpoint_name(base, r.step),
                fine_tuning_job_id=job_id,
                metrics=json.loads(r.metrics),
                step_number=r.step,
            )
            for r in rows[:limit]
        ]
        return ListOf(
            data=data,
            has_more=len(rows) > limit,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )

    # -- model versions -------------------------------------------------------------------

    async def add_version(self, version: ModelVersion) -> None:
        async with self._sessions.begin() as s:
            s.add(version)

    async def versions(
        self, project_id: str, suffix: str | None = None, org_id: str | None = None
    ) -> builtins.list[ModelVersion]:
        """The project's versions; with ``org_id``, its organisation's shared ones too."""
        mine = ModelVersion.project_id == project_id
        if org_id is not None:
            shared = and_(
                ModelVersion.org_id == org_id,
                ModelVersion.sharing.in_(("organization", "public")),
            )
            mine = or_(mine, shared)
        query = select(ModelVersion).where(mine)
        if suffix is not None:
            query = query.where(ModelVersion.suffix == suffix)
        async with self._sessions() as s:
            return list(await s.scalars(query.order_by(ModelVersion.created_at.desc())))

    async def version(self, name: str, project_id: str) -> ModelVersion:
        async with self._sessions() as s:
            row = await s.get(ModelVersion, name)
        if row is None or row.project_id != project_id:
            raise NotFound(f"The model {name!r} does not exist.", param="model")
        return row

    async def set_deployed(self, name: str, deployed: bool) -> None:
        async with self._sessions.begin() as s:
            await s.execute(
                update(ModelVersion).where(ModelVersion.name == name).values(deployed=deployed)
            )

    async def set_sharing(
        self, name: str, sharing: str, description: str | None, published_at: datetime | None
    ) -> None:
        values: dict[str, Any] = {"sharing": sharing, "published_at": published_at}
        if description is not None:
            values["description"] = description
        async with self._sessions.begin() as s:
            await s.execute(update(ModelVersion).where(ModelVersion.name == name).values(**values))

    async def delete_version(self, name: str) -> None:
        async with self._sessions.begin() as s:
            await s.execute(delete(ModelVersion).where(ModelVersion.name == name))


def _has_metadata(row: FineTuneJob, wanted: dict[str, str]) -> bool:
    have = json.loads(row.job_metadata) if row.job_metadata else {}
    return all(have.get(k) == v for k, v in wanted.items())
