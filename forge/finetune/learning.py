"""Learning from use: a project opts a fine-tuned model's suffix in; requests to it and
their callers' ratings (``POST /v1/feedback``, with an optional better answer) collect
into a data set; every ``retrain_every`` well-rated examples start the next version,
trained on the current version's data plus them; the new version replaces the current
one behind the suffix's stable name only if it does as well on the same validation set.

The stable name, ``ft:<base>:<org>:<suffix>``, is what clients call: an adapter alias
that follows the promoted version, so an application never changes its model string.
This module is the database side and the decision; the job manager drives it.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import LearningExample, LearningPolicy, utcnow

# a candidate may lose this much validation loss, on a tie of answers, and still
# replace the current version: it has seen the newer data the old set does not test
LOSS_TOLERANCE = 0.05


class LearningBody(BaseModel):
    """``POST /v1/fine_tuning/models/{name}/learning``: opt in (or out)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    retrain_every: int = Field(
        50, ge=1, le=1_000_000, description="Well-rated new examples that start a new version."
    )
    min_score: float = Field(
        0.8, ge=0, le=1, description="The feedback score (0 to 1) an example needs to count."
    )


class LearningObject(BaseModel):
    object: Literal["fine_tuning.learning"] = "fine_tuning.learning"
    model: str = Field(description="The stable name to call: it follows the promoted version.")
    current: str = Field(description="The version that answers for it now.")
    suffix: str
    enabled: bool
    retrain_every: int
    min_score: float
    examples: int = Field(description="Requests collected and not yet trained on.")
    rated: int = Field(description="Of those, rated at least min_score: the next data.")
    candidate_job: str | None = Field(description="The retraining job under way, if any.")


def stable_name(version: str) -> str:
    """``ft:<base>:<org>:<suffix>`` of the version ``ft:<base>:<org>:<suffix>:<id>``."""
    return version.rsplit(":", 1)[0]


def lineage_alias(model: str) -> str | None:
    """The stable name a called ``ft:`` model belongs to (itself, or its version's)."""
    if not model.startswith("ft:"):
        return None
    parts = model.split(":")
    return model if len(parts) == 4 else stable_name(model) if len(parts) == 5 else None


@dataclass(frozen=True)
class Verdict:
    replace: bool
    reason: str


def judge_candidate(current: dict[str, Any], candidate: dict[str, Any]) -> Verdict:
    """Whether the candidate version replaces the current one, from their metrics on the
    same validation set: more expected answers wins; a tie goes to the candidate unless
    its validation loss is worse by more than ``LOSS_TOLERANCE``."""
    had = int(current.get("evaluation", {}).get("tuned_matches", 0))
    has = int(candidate.get("evaluation", {}).get("tuned_matches", 0))
    was, now = current.get("valid_loss"), candidate.get("valid_loss")
    loss = "" if was is None or now is None else f"; validation loss {now:.4f} vs {was:.4f}"
    if has != had:
        better = has > had
        return Verdict(better, f"expected answers {has} vs {had}{loss}")
    if was is not None and now is not None and now > was * (1 + LOSS_TOLERANCE):
        return Verdict(False, f"expected answers tie at {has}{loss} (worse)")
    return Verdict(True, f"expected answers tie at {has}{loss}")


def example_line(row: LearningExample) -> bytes:
    """A chat training line: the request's conversation, then the answer to learn (the
    caller's correction where it gave one)."""
    messages = json.loads(row.messages)
    answer = row.correction if row.correction is not None else row.answer
    line = {"messages": [*messages, {"role": "assistant", "content": answer}]}
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def side_by_side(current: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]]) -> bytes:
    """The two versions' answers to each validation example (their evaluation files, in
    the same order), as JSONL."""
    lines = [
        json.dumps(
            {
                "prompt": new.get("prompt"),
                "expected": new.get("expected"),
                "current": old.get("tuned"),
                "candidate": new.get("tuned"),
            },
            ensure_ascii=False,
        )
        for old, new in zip(current, candidate, strict=False)
    ]
    return "".join(line + "\n" for line in lines).encode()


class LearningStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def policy(self, project_id: str, suffix: str) -> LearningPolicy | None:
        async with self._sessions() as s:
            return await s.get(LearningPolicy, (project_id, suffix))

    async def by_alias(self, alias: str, project_id: str) -> LearningPolicy | None:
        async with self._sessions() as s:
            return await s.scalar(
                select(LearningPolicy).where(
                    LearningPolicy.alias == alias, LearningPolicy.project_id == project_id
                )
            )

    async def save_policy(self, policy: LearningPolicy) -> None:
        async with self._sessions.begin() as s:
            await s.merge(policy)

    async def update_policy(self, project_id: str, suffix: str, **values: Any) -> None:
        async with self._sessions.begin() as s:
            await s.execute(
                update(LearningPolicy)
                .where(LearningPolicy.project_id == project_id, LearningPolicy.suffix == suffix)
                .values(**values)
            )

    async def policy_of_candidate(self, job_id: str) -> LearningPolicy | None:
        async with self._sessions() as s:
            return await s.scalar(
                select(LearningPolicy).where(LearningPolicy.candidate_job == job_id)
            )

    async def idle_policies(self) -> builtins.list[LearningPolicy]:
        """Enabled policies with no retraining under way (the ones that may be due)."""
        async with self._sessions() as s:
            rows = await s.scalars(
                select(LearningPolicy).where(
                    LearningPolicy.enabled.is_(True), LearningPolicy.candidate_job.is_(None)
                )
            )
            return list(rows)

    async def add_examples(self, rows: Sequence[LearningExample]) -> None:
        """Kept once per request (a retried write adds nothing)."""
        async with self._sessions.begin() as s:
            have = set(
                await s.scalars(
                    select(LearningExample.request_id).where(
                        LearningExample.request_id.in_([r.request_id for r in rows])
                    )
                )
            )
            s.add_all(r for r in rows if r.request_id not in have)

    async def rate(
        self, project_id: str, request_id: str, score: float, correction: str | None
    ) -> LearningExample | None:
        """The example of ``request_id`` (in the project) with its score, if collected."""
        async with self._sessions.begin() as s:
            row = await s.get(LearningExample, request_id)
            if row is None or row.project_id != project_id:
                return None
            row.score = score
            if correction is not None:
                row.correction = correction
            return row

    async def counts(self, policy: LearningPolicy) -> tuple[int, int]:
        """(examples not yet trained on, of which rated at least the policy's minimum)."""
        async with self._sessions() as s:
            unused = _unused(policy)
            total = await s.scalar(select(func.count()).select_from(LearningExample).where(*unused))
            rated = await s.scalar(
                select(func.count())
                .select_from(LearningExample)
                .where(*unused, LearningExample.score >= policy.min_score)
            )
        return int(total or 0), int(rated or 0)

    async def take(self, policy: LearningPolicy, job_id: str) -> builtins.list[LearningExample]:
        """The well-rated examples not yet trained on, now ``job_id``'s (oldest first)."""
        async with self._sessions.begin() as s:
            rows = list(
                await s.scalars(
                    select(LearningExample)
                    .where(*_unused(policy), LearningExample.score >= policy.min_score)
                    .order_by(LearningExample.created_at, LearningExample.request_id)
                )
            )
            for row in rows:
                row.job_id = job_id
            return rows

    async def mark(self, claim: str, job_id: str | None) -> None:
        """The examples ``take`` gave ``claim``: ``job_id``'s (None: handed back)."""
        async with self._sessions.begin() as s:
            await s.execute(
                update(LearningExample).where(LearningExample.job_id == claim).values(job_id=job_id)
            )

    async def current_of(self, name: str) -> LearningPolicy | None:
        """The policy ``name`` answers for, if any."""
        async with self._sessions() as s:
            return await s.scalar(select(LearningPolicy).where(LearningPolicy.current == name))

    def object(self, policy: LearningPolicy, counts: tuple[int, int]) -> LearningObject:
        return LearningObject(
            model=policy.alias,
            current=policy.current,
            suffix=policy.suffix,
            enabled=policy.enabled,
            retrain_every=policy.retrain_every,
            min_score=policy.min_score,
            examples=counts[0],
            rated=counts[1],
            candidate_job=policy.candidate_job,
        )


def _unused(policy: LearningPolicy) -> list[Any]:
    return [
        LearningExample.project_id == policy.project_id,
        LearningExample.suffix == policy.suffix,
        LearningExample.job_id.is_(None),
    ]


def new_example(
    request_id: str,
    org_id: str,
    project_id: str,
    policy_suffix: str,
    model: str,
    messages: list[dict[str, Any]],
    answer: str,
) -> LearningExample:
    return LearningExample(
        request_id=request_id,
        org_id=org_id,
        project_id=project_id,
        suffix=policy_suffix,
        model=model,
        messages=json.dumps(messages, ensure_ascii=False),
        answer=answer,
        created_at=utcnow(),
    )
