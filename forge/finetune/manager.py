"""The job manager: owns the fine-tuning queue and every job's lifecycle.

``validating_files → queued → running → succeeded | failed | cancelled`` (and ``paused``,
back to ``queued`` on resume). Queued jobs start in order of priority, then submission,
when the launcher says the cluster has room; a job that does not fit waits, and so do
the ones behind it (no overtaking: a large job is never starved by small ones). A run
reports every step; the answer to a report is what the manager wants of it (go on,
cancel, pause), so a run stops itself at its next step, freeing its workers through
Ray Train's own shutdown; one that ignores that for ``stop_grace_s`` is stopped by the
launcher. The database holds the state: a restarted manager puts the jobs that were
running back in the queue, and they resume from their last checkpoint.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import secrets
import shutil
from collections.abc import AsyncIterator, Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from forge.adapters import AdapterRegistry, AdapterSpec
from forge.config import PlatformConfig
from forge.db.schema import FineTuneJob, GalleryInstall, ModelVersion, StoredFile, utcnow
from forge.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from forge.files.store import FileStore
from forge.finetune.gallery import SHARED, GalleryStore, InstallBody, ShareBody
from forge.finetune.objects import ACTIVE, FINISHED, CreateJob, JobObject, ListOf, Resources
from forge.finetune.plan import (
    check_suffix,
    fine_tuned_name,
    org_slug,
    plan_run,
    tunable_base,
)
from forge.finetune.retraining import Retraining
from forge.finetune.runs import ADAPTER_DIR, Directive, Launcher, RunOrder
from forge.finetune.settings import LoraSettings, TrainSettings
from forge.finetune.store import JobStore, job_object, new_id

log = logging.getLogger(__name__)
TUNABLE_FORMATS = frozenset({"chat", "prompt_completion"})


@dataclass
class Running:
    """A job's run under way: its attempt, and what was asked of it."""

    attempt: int
    total_steps: int = 0
    directive: Directive = None
    last_step: int = 0


class JobManager:
    def __init__(
        self,
        store: JobStore,
        files: FileStore,
        adapters: AdapterRegistry,
        config: PlatformConfig,
        launcher: Launcher,
        root: Path,
    ) -> None:
        self.store = store
        self.files = files
        self.adapters = adapters
        self.config = config
        self.launcher = launcher
        self.root = root
        self.gallery = GalleryStore(store.sessions)
        self.retraining = Retraining(store, files, adapters, self.create, self._deploy)
        self._running: dict[str, Running] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._schedule_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- the API --------------------------------------------------------------------------

    async def create(self, org_id: str, project_id: str, body: dict[str, Any]) -> JobObject:
        """Check the request (base model, suffix, files), resolve its "auto" values for
        the training file's size, queue it, and start it if there is room."""
        request = CreateJob.model_validate(body)
        base = tunable_base(self.config, request.model)
        check_suffix(request.suffix)
        train = await self._tuning_file(request.training_file, project_id, "training_file")
        if request.validation_file is not None:
            await self._tuning_file(request.validation_file, project_id, "validation_file")
        seed = request.seed if request.seed is not None else _random_seed()
        plan = plan_run(request, train.lines or 1, seed, self.config.fine_tuning)
        if request.deploy:
            _check_servable(base.provider.max_adapters, base.provider.max_lora_rank, plan.lora)
        job_id = new_id("ftjob")
        name = fine_tuned_name(
            base.name, org_slug(await self.store.org_name(org_id)), request.suffix, job_id
        )
        asked = request.chosen_hyperparameters()
        settings = {
            "hyperparameters": plan.hyperparameters.model_dump(),
            "lora_api": {
                "lora_rank": plan.lora.rank,
                "lora_alpha": plan.lora.alpha,
                "lora_dropout": plan.lora.dropout,
                "lora_target_modules": list(plan.lora.target_modules),
            },
            "lora": _plain(plan.lora),
            "train": _plain(plan.settings),
            "resources": request.resources.model_dump(),
            "model_name": name,
            "asked": asked.model_dump(),
        }
        row = FineTuneJob(
            id=job_id,
            org_id=org_id,
            project_id=project_id,
            model=base.name,
            training_file=request.training_file,
            validation_file=request.validation_file,
            suffix=request.suffix,
            seed=seed,
            status="validating_files",
            priority=request.priority,
            settings=json.dumps(settings),
            job_metadata=json.dumps(request.metadata) if request.metadata else None,
            deploy=request.deploy,
            attempts=0,
            created_at=utcnow(),
        )
        await self.store.add(row, f"Validating training file: {request.training_file}")
        queued = await self.store.transition(
            job_id, "queued", "Files validated, moving job to queued state"
        )
        assert queued is not None
        await self.schedule()
        return await self.store.get(job_id, project_id)

    async def get(self, job_id: str, project_id: str) -> JobObject:
        return await self.store.get(job_id, project_id)

    async def list(
        self,
        project_id: str,
        after: str | None = None,
        limit: int = 20,
        metadata: dict[str, str] | None = None,
    ) -> ListOf:
        return await self.store.list(project_id, after, limit, metadata)

    async def events(
        self, job_id: str, project_id: str, after: str | None = None, limit: int = 20
    ) -> ListOf:
        return await self.store.events(job_id, project_id, after, limit)

    async def checkpoints(
        self, job_id: str, project_id: str, after: str | None = None, limit: int = 10
    ) -> ListOf:
        return await self.store.checkpoints(job_id, project_id, after, limit)

    async def cancel(self, job_id: str, project_id: str) -> JobObject:
        """Queued or paused: cancelled at once. Running: cancelled now, and the run told
        to stop at its next step (stopped by force after the grace period)."""
        row = await self.store.row(job_id, project_id)
        if row.status in FINISHED:
            raise Conflict(
                f"Fine-tuning job {job_id!r} has already {_finished_verb(row.status)}.",
                param="fine_tuning_job_id",
                code="job_already_finished",
            )
        moved = await self.store.transition(
            job_id,
            "cancelled",
            "Fine-tuning job cancelled",
            expect=frozenset({*ACTIVE, "paused"}),
            finished_at=utcnow(),
        )
        if moved is None:  # it finished meanwhile
            return await self.cancel(job_id, project_id)
        self._ask_to_stop(job_id, "cancel")
        await self.retraining.settle(job_id)
        return job_object(moved)

    async def pause(self, job_id: str, project_id: str) -> JobObject:
        """A running job keeps a checkpoint and stops; a queued one leaves the queue."""
        row = await self.store.row(job_id, project_id)
        if row.status not in ("queued", "running"):
            raise Conflict(
                f"Only a queued or running job can be paused; {job_id!r} is {row.status}.",
                param="fine_tuning_job_id",
                code="invalid_job_state",
            )
        moved = await self.store.transition(
            job_id, "paused", "Fine-tuning job paused", expect=frozenset({"queued", "running"})
        )
        if moved is None:
            return await self.pause(job_id, project_id)
        self._ask_to_stop(job_id, "pause")
        return job_object(moved)

    async def resume(self, job_id: str, project_id: str) -> JobObject:
        row = await self.store.row(job_id, project_id)
        if row.status != "paused":
            raise Conflict(
                f"Only a paused job can be resumed; {job_id!r} is {row.status}.",
                param="fine_tuning_job_id",
                code="invalid_job_state",
            )
        if job_id in self._running:  # still stopping: it is queued once it has
            raise Conflict(
                f"Fine-tuning job {job_id!r} is still pausing; try again in a moment.",
                param="fine_tuning_job_id",
                code="job_pausing",
                retry_after=1,
            )
        moved = await self.store.transition(
            job_id, "queued", "Fine-tuning job resumed", expect=frozenset({"paused"})
        )
        await self.schedule()
        return job_object(moved) if moved is not None else await self.get(job_id, project_id)

    # -- the queue ------------------------------------------------------------------------

    async def recover(self) -> int:
        """After a restart: jobs that were running (their runs died with the manager)
        and jobs caught validating go back to the queue. Returns how many."""
        back = 0
        for row in await self.store.with_status("running", "validating_files"):
            await self._release(row.id, row.run_handle)
            checkpoint = await self.store.latest_checkpoint(row.id)
            where = f" from step {checkpoint.step}" if checkpoint is not None else ""
            moved = await self.store.transition(
                row.id,
                "queued",
                f"The job manager restarted; the job will resume{where}",
                expect=frozenset({"running", "validating_files"}),
            )
            back += moved is not None
        await self.schedule()
        return back

    async def schedule(self) -> None:
        """Start queued jobs while there is room, highest priority first."""
        async with self._schedule_lock:
            while len(self._running) < self.config.fine_tuning.max_running:
                row = await self.store.next_queued(set(self._running))
                if row is None:
                    return
                resources = Resources(**json.loads(row.settings)["resources"])
                if not self.launcher.fits(resources):
                    return  # it waits at the head of the queue; so do the ones behind it
                await self._start(row)

    async def serve_forever(self, interval_s: float = 1.0, retrain_every_s: float = 30) -> None:
        """Recover, then look at the queue every ``interval_s`` (resources come back),
        and for retrainings due every ``retrain_every_s`` (a rating starts one at once;
        this catches those a failed call or a restart missed)."""
        await self.recover()
        loop = asyncio.get_running_loop()
        next_retrain = loop.time()
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.schedule()
                if loop.time() >= next_retrain:
                    next_retrain = loop.time() + retrain_every_s
                    await self.retraining.due()
            except Exception:  # the database away for a moment: try again next time
                log.exception("fine-tuning: scheduling failed")

    async def _start(self, row: FineTuneJob) -> None:
        attempt = row.attempts + 1
        order = await self._order(row, attempt)
        self._running[row.id] = Running(attempt)
        moved = await self.store.transition(
            row.id,
            "running",
            "Fine-tuning job started"
            + (f" (resuming from {Path(order.resume_from).name})" if order.resume_from else ""),
            expect=frozenset({"queued"}),
            attempts=attempt,
            started_at=row.started_at or utcnow(),
        )
        if moved is None:
            self._running.pop(row.id, None)
            return
        try:
            await self.launcher.start(order, self)
        except Exception as exc:
            log.exception("fine-tuning: %s did not start", row.id)
            self._running.pop(row.id, None)
            await self._fail(row.id, "launch_failed", f"The run could not start: {exc}")

    async def _order(self, row: FineTuneJob, attempt: int) -> RunOrder:
        settings = json.loads(row.settings)
        base = tunable_base(self.config, row.model)
        train = await self.files.stored(row.training_file, row.project_id)
        valid = None
        if row.validation_file is not None:
            valid = await self.files.stored(row.validation_file, row.project_id)
        checkpoint = await self.store.latest_checkpoint(row.id)
        lora = dict(settings["lora"])
        lora["target_modules"] = tuple(lora["target_modules"])
        tuning = self.config.fine_tuning
        return RunOrder(
            job_id=row.id,
            attempt=attempt,
            base_model=base.model_path,
            train_path=self.files.storage.url(train.location),
            validation_path=self.files.storage.url(valid.location) if valid else None,
            output_dir=str(self.root / row.id),
            lora=LoraSettings(**lora),
            settings=TrainSettings(**settings["train"]),
            checkpoint_every=tuning.checkpoint_every,
            keep_checkpoints=tuning.keep_checkpoints,
            resume_from=checkpoint.location if checkpoint is not None else None,
            resources=Resources(**settings["resources"]),
            max_failures=tuning.max_failures,
        )

    def _ask_to_stop(self, job_id: str, directive: Directive) -> None:
        running = self._running.get(job_id)
        if running is None:
            return
        running.directive = directive
        self._background(self._stop_after_grace(job_id, running.attempt))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_after_grace(self, job_id: str, attempt: int) -> None:
        await asyncio.sleep(self.config.fine_tuning.stop_grace_s)
        running = self._running.get(job_id)
        if running is None or running.attempt != attempt:
            return  # it stopped by itself
        log.warning("fine-tuning: %s ignored its stop; stopping it by force", job_id)
        await self.launcher.stop(job_id)
        await self.ended(job_id, attempt, {"result": "stopped"})

    # -- what runs report -----------------------------------------------------------------

    async def progress(self, job_id: str, attempt: int, report: dict[str, Any]) -> Directive:
        """A run's report (a step's metrics, a checkpoint, a message); the answer is what
        the run should do: go on (None), or stop ("cancel", "pause")."""
        running = self._running.get(job_id)
        if running is None or running.attempt != attempt:
            if report.get("type") == "started":  # an older attempt's restarted workers
                self._background(self.launcher.release(str(report["handle"])))
            return "cancel"  # a run the manager has let go of (an older attempt)
        async with self._lock(job_id):
            kind = report.get("type")
            if kind == "metrics":
                await self._metrics(job_id, running, report)
            elif kind == "checkpoint":
                await self._checkpoint(job_id, report)
            elif kind == "started":  # what to release should the run die unseen
                await self.store.update(job_id, run_handle=str(report["handle"]))
            elif kind == "message":
                level = report.get("level", "info")
                await self.store.event(job_id, str(report["message"]), level=level)
        return running.directive

    async def _metrics(self, job_id: str, running: Running, report: dict[str, Any]) -> None:
        step, total = int(report["step"]), int(report["total_steps"])
        running.last_step, running.total_steps = step, total
        data = {k: report[k] for k in METRIC_KEYS if report.get(k) is not None}
        text = f"Step {step}/{total}: training loss={report['train_loss']:.4f}"
        if report.get("valid_loss") is not None:
            text += f", validation loss={report['valid_loss']:.4f}"
        await self.store.event(job_id, text, kind="metrics", data=data)
        row = await self.store.row(job_id)
        values: dict[str, Any] = {"trained_tokens": int(report.get("trained_tokens") or 0)}
        if row.started_at is not None and step > 0:
            started = row.started_at.replace(tzinfo=utcnow().tzinfo)
            per_step = (utcnow() - started) / step
            values["estimated_finish"] = utcnow() + per_step * (total - step)
        await self.store.update(job_id, **values)

    async def _checkpoint(self, job_id: str, report: dict[str, Any]) -> None:
        metrics = {
            k: float(v) for k, v in report.get("metrics", {}).items() if isinstance(v, int | float)
        }
        step = int(report["step"])
        dropped = await self.store.add_checkpoint(
            job_id, step, metrics, str(report["location"]), self.config.fine_tuning.keep_checkpoints
        )
        for location in dropped:
            await asyncio.to_thread(shutil.rmtree, location, True)
        await self.store.event(job_id, f"Checkpoint created at step {step}")

    async def ended(self, job_id: str, attempt: int, outcome: dict[str, Any]) -> None:
        """A run is over: it finished, stopped when asked, or failed."""
        running = self._running.get(job_id)
        if running is None or running.attempt != attempt:
            return
        async with self._lock(job_id):
            self._running.pop(job_id, None)
            await self._release(job_id)
            result = outcome.get("result")
            if running.directive == "pause":
                await self.store.event(job_id, f"The run stopped at step {running.last_step}")
            elif running.directive == "cancel":
                await self.store.event(job_id, "The run stopped; its workers are released")
            elif result == "finished":
                await self._succeed(job_id, outcome)
            else:
                message = str(outcome.get("message") or "the run ended without finishing")
                step = outcome.get("step", running.last_step)
                await self._fail(
                    job_id,
                    str(outcome.get("code") or "training_failed"),
                    f"{message} (step {step})",
                )
        self._locks.pop(job_id, None)
        await self.retraining.settle(job_id)
        await self.schedule()

    async def _succeed(self, job_id: str, outcome: dict[str, Any]) -> None:
        row = await self.store.row(job_id)
        settings = json.loads(row.settings)
        name = settings["model_name"]
        summary = dict(outcome.get("summary", {}))
        adapter = str(outcome.get("adapter") or self.root / job_id / ADAPTER_DIR)
        result_files: list[str] = []
        if outcome.get("evaluation"):
            file_id, scores = await self._evaluation(row, str(outcome["evaluation"]))
            result_files.append(file_id)
            summary["evaluation"] = scores
            await self.store.event(
                job_id,
                f"Evaluated on {scores['examples']} validation examples: the tuned model "
                f"gave the expected answer {scores['tuned_matches']} times, the base model "
                f"{scores['base_matches']} (side by side in {file_id})",
            )
        await self.store.add_version(
            ModelVersion(
                name=name,
                org_id=row.org_id,
                project_id=row.project_id,
                base_model=row.model,
                suffix=row.suffix,
                job_id=job_id,
                adapter_location=adapter,
                training_file=row.training_file,
                hyperparameters=json.dumps({**settings["hyperparameters"], **settings["lora_api"]}),
                metrics=json.dumps(summary),
                deployed=False,
                created_at=utcnow(),
            )
        )
        await self.store.event(job_id, f"New fine-tuned model created: {name}")
        version = await self.store.version(name, row.project_id)
        result_files += await self.retraining.decide(job_id, version, _first(result_files))
        if row.deploy:
            try:
                await self._deploy(await self.store.version(name, row.project_id))
                await self.store.event(job_id, f"Deployed: {name} answers on /v1/chat/completions")
            except Exception as exc:  # the model stays registered: deploy it by hand
                await self.store.event(job_id, f"Deploying {name} failed: {exc}", level="warn")
        await self.store.transition(
            job_id,
            "succeeded",
            "The job has successfully completed",
            expect=frozenset({"running"}),
            fine_tuned_model=name,
            result_files=json.dumps(result_files) if result_files else None,
            trained_tokens=int(summary.get("trained_tokens") or row.trained_tokens or 0),
            finished_at=utcnow(),
            estimated_finish=None,
        )

    async def _evaluation(self, row: FineTuneJob, path: str) -> tuple[str, dict[str, int]]:
        """The run's base-against-tuned comparison, kept as a file of the job's project
        (OpenAI's ``result_files``), and how often each model said what was expected."""
        data = await asyncio.to_thread(Path(path).read_bytes)
        rows = [json.loads(line) for line in data.splitlines() if line.strip()]

        def matches(model: str) -> int:
            return sum(r["expected"].strip() in r[model] for r in rows if r["expected"].strip())

        async def blocks() -> AsyncIterator[bytes]:
            yield data

        file_id = f"file-{row.id.removeprefix('ftjob-')}"
        await self.files.save_generated(
            row.org_id, row.project_id, file_id, "evaluation.jsonl", "fine-tune-results", blocks()
        )
        scores = {
            "examples": len(rows),
            "tuned_matches": matches("tuned"),
            "base_matches": matches("base"),
        }
        return file_id, scores

    async def _fail(self, job_id: str, code: str, message: str) -> None:
        error = {"code": code, "message": message, "param": None}
        await self.store.transition(
            job_id,
            "failed",
            f"Fine-tuning job failed: {message}",
            level="error",
            expect=frozenset({"running", "queued"}),
            error=json.dumps(error),
            finished_at=utcnow(),
            estimated_finish=None,
        )

    # -- the models jobs made -------------------------------------------------------------

    async def versions(
        self, project_id: str, suffix: str | None = None, org_id: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """The project's versions (``org_id``: and its organisation's shared ones)."""
        return [_version(v) for v in await self.store.versions(project_id, suffix, org_id)]

    async def deploy(self, name: str, project_id: str) -> dict[str, Any]:
        """Serve ``name`` to its project: registered with the adapter registry, the base
        model's replicas load it on its first request (no restart)."""
        version = await self.store.version(name, project_id)
        await self._deploy(version)
        return _version(await self.store.version(name, project_id))

    async def _deploy(self, version: ModelVersion) -> None:
        """Registered for its project, or (shared) for its whole organisation."""
        base = tunable_base(self.config, version.base_model)
        rank = int(json.loads(version.hyperparameters).get("lora_rank", 0))
        _check_servable(base.provider.max_adapters, base.provider.max_lora_rank, rank)
        spec = AdapterSpec(
            name=version.name,
            alias=version.name,
            base_model=version.base_model,
            source=version.adapter_location,
            org_id=version.org_id,
            project_id=None if version.sharing in SHARED else version.project_id,
        )
        await self.adapters.register(spec)
        await self.store.set_deployed(version.name, True)

    async def undeploy(self, name: str, project_id: str) -> dict[str, Any]:
        version = await self.store.version(name, project_id)
        await self._unregister(version)
        await self.store.set_deployed(name, False)
        return _version(await self.store.version(name, project_id))

    async def _unregister(self, version: ModelVersion) -> None:
        for scope in (version.project_id, None):  # shared or not
            found = await self.adapters.owned(version.name, version.org_id, scope)
            if found is not None:
                await self.adapters.delete(found.name)

    async def delete_version(self, name: str, project_id: str) -> dict[str, Any]:
        """Undeploy ``name`` and forget it; its adapter's files are removed (the gallery's
        installs are copies: they keep working)."""
        version = await self.store.version(name, project_id)
        policy = await self.retraining.learning.current_of(name)
        if policy is not None:
            raise Conflict(
                f"{name} answers as {policy.alias} (learning from use): make another "
                "version current first.",
                param="model",
                code="model_in_use",
            )
        await self.undeploy(name, project_id)
        await self.store.delete_version(name)
        await asyncio.to_thread(shutil.rmtree, version.adapter_location, True)
        return {"id": name, "object": "model", "deleted": True}

    async def share(
        self, name: str, project_id: str, body: dict[str, Any], publisher: bool
    ) -> dict[str, Any]:
        """Who may use ``name``: its project, its organisation, or the gallery too
        (``publisher``: the caller may publish outside the organisation). A deployed
        model is registered again in its new scope at once."""
        request = ShareBody.model_validate(body)
        if request.scope == "public" and not publisher:
            raise PermissionDenied(
                "Publishing a model to the gallery takes an admin key of its organisation."
            )
        version = await self.store.version(name, project_id)
        published = version.published_at
        if request.scope == "public" and published is None:
            published = utcnow()
        await self.store.set_sharing(
            name,
            request.scope,
            request.description if "description" in request.model_fields_set else None,
            published if request.scope == "public" else None,
        )
        if version.deployed and (version.sharing in SHARED) != (request.scope in SHARED):
            await self._unregister(version)
            await self._deploy(await self.store.version(name, project_id))
        return _version(await self.store.version(name, project_id))

    async def install(
        self, name: str, org_id: str, project_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Deploy a gallery model into this project: a copy of its adapter, registered
        under ``alias`` for this project alone. The same model again: what is there."""
        request = InstallBody.model_validate(body)
        version = await self.gallery.published(name)
        existing = await self.gallery.install_of(name, project_id)
        if existing is not None:
            return _installed(existing, version)
        base = tunable_base(self.config, version.base_model)
        rank = int(json.loads(version.hyperparameters).get("lora_rank", 0))
        _check_servable(base.provider.max_adapters, base.provider.max_lora_rank, rank)
        alias = request.alias or name
        location = self.root / "installs" / project_id / secrets.token_hex(8)
        await asyncio.to_thread(shutil.copytree, version.adapter_location, location)
        try:
            await self.adapters.register(
                AdapterSpec(
                    name=alias,
                    alias=alias,
                    base_model=version.base_model,
                    source=str(location),
                    org_id=org_id,
                    project_id=project_id,
                )
            )
            install = GalleryInstall(
                model=name,
                project_id=project_id,
                org_id=org_id,
                alias=alias,
                location=str(location),
                created_at=utcnow(),
            )
            await self.gallery.add_install(install)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, location, True)
            raise
        return _installed(install, version)

    async def uninstall(self, name: str, org_id: str, project_id: str) -> dict[str, Any]:
        install = await self.gallery.install_of(name, project_id)
        if install is None:
            raise NotFound(f"{name!r} is not deployed from the gallery here.", param="model")
        found = await self.adapters.owned(install.alias, org_id, project_id)
        if found is not None:
            await self.adapters.delete(found.name)
        await self.gallery.remove_install(name, project_id)
        await asyncio.to_thread(shutil.rmtree, install.location, True)
        return {"id": install.alias, "object": "model", "deleted": True}

    # -- learning from use (forge.finetune.learning) -------------------------------------

    async def learn(self, name: str, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Opt ``name``'s suffix in (or out, or change its policy); ``name`` becomes the
        version its stable name serves."""
        return (await self.retraining.opt_in(name, project_id, body)).model_dump()

    async def learning(self, name: str, project_id: str) -> dict[str, Any]:
        return (await self.retraining.status(name, project_id)).model_dump()

    async def retrain_if_due(self, project_id: str, suffix: str) -> str | None:
        """After a rating: the next version's job, if its policy's examples are in."""
        return await self.retraining.start_if_due(project_id, suffix)

    # -- helpers --------------------------------------------------------------------------

    async def _release(self, job_id: str, handle: str | None = None) -> None:
        """Whatever the job's last run held, freed (a run that ended well freed it
        itself: then this finds nothing)."""
        if handle is None:
            handle = (await self.store.row(job_id)).run_handle
        if handle is not None:
            try:
                await self.launcher.release(handle)
            except Exception:
                log.exception("fine-tuning: releasing %s's run failed", job_id)
            await self.store.update(job_id, run_handle=None)

    def _lock(self, job_id: str) -> asyncio.Lock:
        return self._locks.setdefault(job_id, asyncio.Lock())

    async def _tuning_file(self, file_id: str, project_id: str, param: str) -> StoredFile:
        try:
            stored = await self.files.stored(file_id, project_id)
        except NotFound:
            raise InvalidRequest(
                f"Invalid '{param}': no file {file_id!r} in this project.",
                param=param,
                code="invalid_file",
            ) from None
        if stored.purpose != "fine-tune" or stored.format not in TUNABLE_FORMATS:
            raise InvalidRequest(
                f"Invalid '{param}': {file_id} was uploaded with purpose "
                f"{stored.purpose!r}; fine-tuning needs a 'fine-tune' file.",
                param=param,
                code="invalid_file_purpose",
            )
        return stored


METRIC_KEYS = (
    "step",
    "total_steps",
    "epoch",
    "train_loss",
    "valid_loss",
    "tokens_per_s",
    "trained_tokens",
    "learning_rate",
)


def _check_servable(max_adapters: int, max_rank: int, lora: LoraSettings | int) -> None:
    rank = lora.rank if isinstance(lora, LoraSettings) else lora
    if max_adapters == 0:
        raise InvalidRequest(
            "This base model serves no adapters (max_adapters: 0): the job can train, not deploy.",
            param="deploy",
            code="not_deployable",
        )
    if rank > max_rank:
        raise InvalidRequest(
            f"LoRA rank {rank} is above the {max_rank} the base model's server accepts.",
            param="lora_rank",
            code="not_deployable",
        )


def _version(v: ModelVersion) -> dict[str, Any]:
    return {
        "id": v.name,
        "object": "model",
        "base_model": v.base_model,
        "suffix": v.suffix,
        "fine_tuning_job_id": v.job_id,
        "training_file": v.training_file,
        "hyperparameters": json.loads(v.hyperparameters),
        "metrics": json.loads(v.metrics),
        "deployed": v.deployed,
        "created_at": int(v.created_at.timestamp()),
        "project_id": v.project_id,
        "sharing": v.sharing,
        "description": v.description,
        "published_at": None if v.published_at is None else int(v.published_at.timestamp()),
    }


def _installed(install: GalleryInstall, version: ModelVersion) -> dict[str, Any]:
    return {
        "id": install.alias,
        "object": "model",
        "gallery_model": install.model,
        "base_model": version.base_model,
        "created_at": int(install.created_at.timestamp()),
    }


def _plain(settings: Any) -> dict[str, Any]:
    out = asdict(settings)
    if "target_modules" in out:
        out["target_modules"] = list(out["target_modules"])
    return out


def _first(items: builtins.list[str]) -> str | None:
    return items[0] if items else None


def _random_seed() -> int:
    return secrets.randbelow(2**31)


def _finished_verb(status: str) -> str:
    return {"succeeded": "succeeded", "failed": "failed", "cancelled": "been cancelled"}[status]
