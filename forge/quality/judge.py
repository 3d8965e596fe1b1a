"""A judge model scores a sample of answers against a rubric, 0 to 1; the score lands
on the answer's usage record (``quality_score``), where the A/B reports and the usage
analytics read it per arm and per model.

Judging runs after the answer is out, in the background, and never delays or fails
the request it judges. The judge's own call is a usage record of its own (its tokens
are spent on the organisation's behalf), with the judged request's id plus ``.judge``.
The score is written when the judged request's record exists: the shipper sends records
in batches, so a first write that finds no row is tried again a few times.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from forge.config import JudgeConfig
from forge.db.schema import UsageRecord

log = logging.getLogger(__name__)

SCORE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "judgement",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "reason": {"type": "string"},
            },
            "required": ["score", "reason"],
            "additionalProperties": False,
        },
    },
}
WRITE_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # ~30 s for the record to be shipped


def judge_body(config: JudgeConfig, request: dict[str, Any], answer: str) -> dict[str, Any]:
    """The judge's chat request: the rubric, the caller's messages and the answer."""
    limit = config.max_answer_chars
    asked = json.dumps(request.get("messages", []), ensure_ascii=False)[:limit]
    return {
        "messages": [
            {
                "role": "system",
                "content": "You grade answers of an AI assistant. Rubric: "
                + config.rubric
                + ' Reply with JSON only: {"score": <0 to 1>, "reason": "<one sentence>"}.',
            },
            {
                "role": "user",
                "content": f"Conversation (JSON):\n{asked}\n\nAnswer to grade:\n{answer[:limit]}",
            },
        ],
        "response_format": SCORE_FORMAT,
        "temperature": 0,
        "max_tokens": 200,
    }


def parse_score(reply: dict[str, Any]) -> float | None:
    """The judge's score from its Chat Completions answer (None if it gave none)."""
    try:
        content = reply["choices"][0]["message"]["content"]
        value = json.loads(content)["score"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= 1 else None


class QualityScores:
    """Scores on usage records."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def record(self, request_id: str, score: float) -> bool:
        """Whether the request's record was there to take it."""
        async with self.sessions.begin() as s:
            done = await s.execute(
                update(UsageRecord)
                .where(UsageRecord.request_id == request_id)
                .values(quality_score=score)
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]


Ask = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class Judge:
    """Samples answers and scores them in the background."""

    def __init__(
        self,
        config: JudgeConfig,
        scores: QualityScores,
        sample: Callable[[], float] = random.random,
        write_delays_s: tuple[float, ...] = WRITE_DELAYS_S,
    ) -> None:
        self.config = config
        self.scores = scores
        self.sample = sample
        self.write_delays_s = write_delays_s
        self.tasks: set[asyncio.Task[float | None]] = set()

    def picks(self) -> bool:
        """Whether the sample takes this answer (decided before any work on it)."""
        return self.sample() < self.config.sample_rate

    def start(self, request_id: str, request: dict[str, Any], answer: str, ask: Ask) -> None:
        """Judge an answer in the background. ``ask`` sends the judge's request (and
        records its usage), returning the judge's answer, or None if the call failed."""
        if not answer:
            return
        task = asyncio.create_task(self.judge(request_id, request, answer, ask))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def judge(
        self, request_id: str, request: dict[str, Any], answer: str, ask: Ask
    ) -> float | None:
        """Score one answer and store the score; the score, or None."""
        try:
            reply = await ask(judge_body(self.config, request, answer))
            score = None if reply is None else parse_score(reply)
            if score is None:
                log.warning("judge gave no score for %s", request_id)
                return None
            for delay in (0.0, *self.write_delays_s):
                await asyncio.sleep(delay)
                if await self.scores.record(request_id, score):
                    return score
            log.warning("judge: no usage record %s to score after retries", request_id)
        except Exception:  # judging must never disturb serving
            log.exception("judging %s failed", request_id)
        return None

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
