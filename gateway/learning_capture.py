"""Collecting the requests to fine-tuned models whose project opted in to learning from
use (``forge.finetune.learning``): the conversation and the answer, kept by request id
for the caller's later rating. Off the hot path: a request to any other model pays one
string test; one to an ``ft:`` model a cached policy lookup and a background write."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson

from forge.finetune.learning import LearningStore, lineage_alias, new_example
from forge.protocol.sse import StreamText
from forge.quality.validation import answer_text
from forge.ttl_cache import TtlCache

log = logging.getLogger(__name__)
ROLES = frozenset({"system", "developer", "user", "assistant"})


class LearningCapture:
    def __init__(
        self,
        store: LearningStore,
        ttl_s: float = 5.0,
        keeps_bodies: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self._keeps_bodies = keeps_bodies  # the project's data retention allows it
        self._ttl_s = ttl_s
        self._suffixes: TtlCache[tuple[str, str], str | None] = TtlCache(10_000)
        self._pending: set[asyncio.Task[None]] = set()

    def offer(
        self,
        request_id: str,
        org_id: str | None,
        project_id: str | None,
        body: dict[str, Any],
        answer: bytes | str,
    ) -> None:
        """Keep this exchange if its model learns from use (decided in the background);
        ``answer``: the chat completion's JSON, or a stream's text."""
        if org_id is None or project_id is None:
            return
        alias = _alias_of(body)
        if alias is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._keep(request_id, org_id, project_id, alias, body, answer)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def stream_keeper(
        self,
        request_id: str,
        org_id: str | None,
        project_id: str | None,
        body: dict[str, Any],
    ) -> StreamKeeper | None:
        """What collects a stream's answer and offers it when the stream ends well, for
        a request this may keep (else None: the stream pays nothing)."""
        if _alias_of(body) is None:
            return None
        return StreamKeeper(partial(self.offer, request_id, org_id, project_id, body))

    async def _keep(
        self,
        request_id: str,
        org_id: str,
        project_id: str,
        alias: str,
        body: dict[str, Any],
        answer: bytes | str,
    ) -> None:
        try:
            suffix = await self._suffix(alias, project_id)
            if suffix is None:
                return
            if self._keeps_bodies is not None and not await self._keeps_bodies(project_id):
                return  # zero data retention: not even for learning
            text = answer if isinstance(answer, str) else answer_text(orjson.loads(answer))
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


class StreamKeeper(StreamText):
    """The assistant's text of a chat stream, as it is relayed; ``done``: offered for
    keeping."""

    def __init__(self, offer: Callable[[str], None]) -> None:
        super().__init__()
        self._offer = offer

    def done(self) -> None:
        self._offer(self.text)


def _alias_of(body: dict[str, Any]) -> str | None:
    """The stable name a chat request's model learns under, if it could (an ``ft:``
    model, text turns only); whether it does is the policy's, looked up later."""
    model = body.get("model")
    if not isinstance(model, str) or not model.startswith("ft:"):
        return None
    alias = lineage_alias(model)
    return alias if alias is not None and _plain_chat(body.get("messages")) else None


def _plain_chat(messages: Any) -> bool:
    """Text turns only: what a chat training line may hold."""
    return isinstance(messages, list) and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
        for m in messages
    )
