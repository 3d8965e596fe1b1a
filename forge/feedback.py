"""Callers' feedback on answers: a score from 0 to 1 on a request its own project made,
kept on the request's usage record (so A/B reports and usage reports read it there)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.db.schema import UsageRecord


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1, max_length=64, description="The answer's x-request-id (the platform's)."
    )
    score: float = Field(ge=0, le=1, description="0: useless … 1: exactly right.")
    correction: str | None = Field(
        None,
        min_length=1,
        max_length=32_768,
        description="The answer it should have been (a model learning from use trains on it).",
    )


class FeedbackObject(BaseModel):
    object: Literal["feedback"] = "feedback"
    request_id: str
    score: float
    learning: bool = Field(
        False, description="Kept as an example for the model's next version (learning from use)."
    )


class FeedbackStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def record(self, project_id: str | None, body: FeedbackBody) -> bool:
        """Whether the project has that request (a later score replaces an earlier)."""
        async with self.sessions.begin() as s:
            done = await s.execute(
                update(UsageRecord)
                .where(
                    UsageRecord.request_id == body.request_id,
                    UsageRecord.project_id == project_id,
                )
                .values(feedback_score=body.score)
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]
