"""The job manager's side of learning from use (``forge.finetune.learning``): opting a
model in, starting the next version when enough well-rated examples have come, and
deciding, when it succeeds, whether it replaces the current one behind the stable name.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from forge.adapters import AdapterRegistry, AdapterSpec
from forge.db.schema import FineTuneJob, LearningExample, LearningPolicy, ModelVersion, utcnow
from forge.errors import InvalidRequest
from forge.files.store import FileStore
from forge.finetune.gallery import SHARED
from forge.finetune.learning import (
    LearningBody,
    LearningObject,
    LearningStore,
    example_line,
    judge_candidate,
    side_by_side,
    stable_name,
)
from forge.finetune.objects import FINISHED, JobObject
from forge.finetune.store import JobStore

log = logging.getLogger(__name__)
CreateJob = Callable[[str, str, dict[str, Any]], Awaitable[JobObject]]
Deploy = Callable[[ModelVersion], Awaitable[None]]


class Retraining:
    def __init__(
        self,
        jobs: JobStore,
        files: FileStore,
        adapters: AdapterRegistry,
        create_job: CreateJob,
        deploy: Deploy,
    ) -> None:
        self.jobs = jobs
        self.files = files
        self.adapters = adapters
        self.learning = LearningStore(jobs.sessions)
        self._create_job = create_job
        self._deploy = deploy
        self._checking = asyncio.Lock()

    async def opt_in(self, name: str, project_id: str, body: dict[str, Any]) -> LearningObject:
        """Make ``name`` the current version of its suffix's learning policy (or change
        the policy), and serve it under the suffix's stable name."""
        request = LearningBody.model_validate(body)
        version = await self.jobs.version(name, project_id)
        if not version.suffix:
            raise InvalidRequest(
                "Learning from use needs a model trained with a suffix: its versions share "
                "the stable name ft:<base>:<org>:<suffix>.",
                param="model",
                code="no_suffix",
            )
        job = await self.jobs.row(version.job_id)
        if job.validation_file is None:
            raise InvalidRequest(
                "Learning from use needs a model trained with a validation_file: each new "
                "version is compared with the current one on it.",
                param="model",
                code="no_validation_file",
            )
        policy = await self.learning.policy(project_id, version.suffix)
        if policy is None:
            policy = LearningPolicy(
                project_id=project_id,
                suffix=version.suffix,
                org_id=version.org_id,
                base_model=version.base_model,
                alias=stable_name(name),
                current=name,
                validation_file=job.validation_file,
                candidate_job=None,
                created_at=utcnow(),
            )
        elif policy.current != name:  # this version now answers for the suffix
            policy.current, policy.validation_file = name, job.validation_file
        policy.enabled = request.enabled
        policy.retrain_every, policy.min_score = request.retrain_every, request.min_score
        await self.learning.save_policy(policy)
        await self._point_alias(policy, version)
        return await self.status(name, project_id)

    async def status(self, name: str, project_id: str) -> LearningObject:
        version = await self.jobs.version(name, project_id)
        policy = await self.learning.policy(project_id, version.suffix or "")
        if policy is None:
            raise InvalidRequest(
                f"{name} does not learn from use: opt in with POST "
                f"/v1/fine_tuning/models/{name}/learning.",
                param="model",
                code="not_learning",
            )
        return self.learning.object(policy, await self.learning.counts(policy))

    async def due(self) -> list[str]:
        """Start every retraining that is due; the jobs started."""
        started = []
        for policy in await self.learning.idle_policies():
            job_id = await self.start_if_due(policy.project_id, policy.suffix)
            if job_id is not None:
                started.append(job_id)
        return started

    async def start_if_due(self, project_id: str, suffix: str) -> str | None:
        """One check at a time: two ratings at once start one job, not two."""
        async with self._checking:
            policy = await self.learning.policy(project_id, suffix)
            if policy is None or not policy.enabled or policy.candidate_job is not None:
                return None
            return await self._start_if_due(policy)

    async def _start_if_due(self, policy: LearningPolicy) -> str | None:
        """The next version's job, if ``retrain_every`` well-rated examples are waiting:
        trained on the current version's data and them, with its settings."""
        if (await self.learning.counts(policy))[1] < policy.retrain_every:
            return None
        current = await self.jobs.version(policy.current, policy.project_id)
        previous = await self.jobs.row(current.job_id)
        claim = f"retrain-{policy.project_id}-{policy.suffix}"[:40]
        examples = await self.learning.take(policy, claim)
        try:
            job = await self._next_version(policy, current, previous, examples)
        except Exception:
            await self.learning.mark(claim, None)  # the next check tries again
            raise
        await self.learning.update_policy(policy.project_id, policy.suffix, candidate_job=job.id)
        await self.learning.mark(claim, job.id)
        await self.jobs.event(
            job.id,
            f"Retraining {policy.alias} on {len(examples)} rated examples from use "
            f"(current version: {current.name})",
        )
        return job.id

    async def _next_version(
        self,
        policy: LearningPolicy,
        current: ModelVersion,
        previous: FineTuneJob,
        examples: list[LearningExample],
    ) -> JobObject:
        data = await self._training_file(policy, previous.training_file, examples)
        settings = json.loads(previous.settings)
        hyperparameters = {**settings["asked"], **settings["lora_api"]}
        return await self._create_job(
            policy.org_id,
            policy.project_id,
            {
                "model": policy.base_model,
                "training_file": data,
                "validation_file": policy.validation_file,
                "suffix": policy.suffix,
                "seed": previous.seed,
                "metadata": {"learning_from": current.name, "examples": str(len(examples))},
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": hyperparameters},
                },
                "resources": settings["resources"],
                "priority": previous.priority,
            },
        )

    async def _training_file(
        self, policy: LearningPolicy, previous_file: str, examples: list[LearningExample]
    ) -> str:
        _, previous = await self.files.content(previous_file, policy.project_id)

        async def blocks() -> AsyncIterator[bytes]:
            last = b"\n"
            async for block in previous:
                if block:
                    last = block[-1:]
                yield block
            if last != b"\n":
                yield b"\n"
            for example in examples:
                yield example_line(example)

        stored = await self.files.save_training(
            policy.org_id, policy.project_id, f"{policy.suffix}-learned.jsonl", blocks()
        )
        return stored.id

    async def settle(self, job_id: str) -> None:
        """A job ended without a model (failed, cancelled): if it was a policy's
        candidate, the policy waits for its next examples."""
        policy = await self.learning.policy_of_candidate(job_id)
        if policy is None or (await self.jobs.row(job_id)).status not in FINISHED:
            return  # not a candidate, or paused: still the candidate
        await self.learning.update_policy(policy.project_id, policy.suffix, candidate_job=None)
        await self.jobs.event(job_id, f"{policy.current} stays {policy.alias}")

    async def decide(
        self, job_id: str, candidate: ModelVersion, evaluation: str | None
    ) -> list[str]:
        """A job made ``candidate``: if it was a policy's candidate, it replaces the
        current version behind the stable name, or not (``judge_candidate``), before
        the job is marked succeeded. Returns the result files it added (the two
        versions' answers side by side, from their ``evaluation`` files)."""
        policy = await self.learning.policy_of_candidate(job_id)
        if policy is None:
            return []
        await self.learning.update_policy(policy.project_id, policy.suffix, candidate_job=None)
        current = await self.jobs.version(policy.current, policy.project_id)
        verdict = judge_candidate(json.loads(current.metrics), json.loads(candidate.metrics))
        compared = await self._compare_file(job_id, current, evaluation)
        if verdict.replace:
            await self.learning.update_policy(
                policy.project_id, policy.suffix, current=candidate.name
            )
            policy.current = candidate.name
            await self._deploy(candidate)
            await self._point_alias(policy, candidate)
            message = f"{candidate.name} replaced {current.name} as {policy.alias}"
        else:
            message = f"{current.name} stays {policy.alias}; {candidate.name} is kept unused"
        await self.jobs.event(job_id, f"{message} ({verdict.reason})")
        return [] if compared is None else [compared]

    async def _compare_file(
        self, job_id: str, current: ModelVersion, evaluation: str | None
    ) -> str | None:
        """Both versions' answers on the validation set, side by side: a file of the
        project (None: a version without an evaluation)."""
        previous = json.loads((await self.jobs.row(current.job_id)).result_files or "[]")
        if not previous or evaluation is None:
            return None
        rows = []
        for file_id in (previous[0], evaluation):
            _, blocks = await self.files.content(file_id, current.project_id)
            data = b"".join([b async for b in blocks])
            rows.append([json.loads(x) for x in data.splitlines() if x.strip()])

        async def one() -> AsyncIterator[bytes]:
            yield side_by_side(rows[0], rows[1])

        file_id = f"file-{job_id.removeprefix('ftjob-')}c"
        await self.files.save_generated(
            current.org_id, current.project_id, file_id, "compare.jsonl",
            "fine-tune-results", one(),
        )  # fmt: skip
        return file_id

    async def _point_alias(self, policy: LearningPolicy, version: ModelVersion) -> None:
        """The stable name serves ``version`` (registered again if it served another)."""
        project = None if version.sharing in SHARED else version.project_id
        for scope in (version.project_id, None):
            found = await self.adapters.owned(policy.alias, version.org_id, scope)
            if found is not None and (found.source, scope) != (version.adapter_location, project):
                await self.adapters.delete(found.name)
        await self.adapters.register(
            AdapterSpec(
                name=policy.alias,
                alias=policy.alias,
                base_model=version.base_model,
                source=version.adapter_location,
                org_id=version.org_id,
                project_id=project,
            )
        )
