"""Collecting the requests to fine-tuned models whose project opted in to learning from
use (``forge.finetune.learning``): the conversation and the answer, kept by request id
for the caller's later rating. Off the hot path: a request to any other model pays one
string test; one to an ``ft:`` model a cached policy lookup and a background write."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from forge.finetune.learning import LearningStore, lineage_alias, new_example
from forge.quality.validation import answer_text
from forge.ttl_cache import TtlCache

log = logging.getLogger(__name__)
ROLES = frozenset({"system", "developer", "user", "assistant"})


class LearningCapture:
    def __init__(self, store: LearningStore, ttl_s: float = 5.0) -> None:
        self.store = store
        self._ttl_s = ttl_s
        self._suffixes: TtlCache[tuple[str, str], str | None] = TtlCache(10_000)
        self._pending: set[asyncio.Task[None]] = set()

    def offer(
        self,
        request_id: str,
        org_id: str | None,
        project_id: str | None,
        body: dict[str, Any],
        answer: bytes,
    ) -> None:
        """Keep this exchange if its model learns from use (decided in the background)."""
        model = body.get("model")
        if not isinstance(model, str) or org_id is None or project_id is None:
            return
        alias = lineage_alias(model)
        if alias is None or not _plain_chat(body.get("messages")):
            return
        task = asyncio.get_running_loop().create_task(
            self._keep(request_id, org_id, project_id, alias, body, answer)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _keep(
        self,
        request_id: str,
        org_id: str,
        project_id: str,
        alias: str,
        body: dict[str, Any],
        answer: bytes,
    ) -> None:
        try:
            suffix = await self._suffix(alias, project_id)
            if suffix is None:
                return
            text = answer_text(orjson.loads(answer))
            example = new_example(
                request_id, org_id, project_id, suffix, body["model"], body["messages"], text
            )
            await self.store.add_examples([example])
        except Exception as exc:  # a lost example costs a data point, never the request
            log.warning("learning: keeping %s failed: %s", request_id, type(exc).__name__)

    async def _suffix(self, alias: str, project_id: str) -> str | None:
        """The suffix of the enabled policy behind ``alias`` for the project, or None."""
        key = (alias, project_id)
        found, suffix = self._suffixes.lookup(key)
        if not found:
            policy = await self.store.by_alias(alias, project_id)
            suffix = policy.suffix if policy is not None and policy.enabled else None
            self._suffixes.put(key, suffix, self._ttl_s)
        return suffix

    def forget(self) -> None:
        """After a policy changed here (other replicas follow within the TTL)."""
        self._suffixes.clear()

    async def flush(self) -> None:
        """Every exchange offered so far, written (a rating may be about to name it)."""
        if self._pending:
            await asyncio.wait(list(self._pending))

    async def close(self) -> None:
        await self.flush()


def _plain_chat(messages: Any) -> bool:
    """Text turns only: what a chat training line may hold."""
    return isinstance(messages, list) and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        for m in messages
    )
