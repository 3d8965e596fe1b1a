"""Stored responses: the durable side of the Responses API's ``store``.

A plain class over an async engine, opened by each gateway replica on the platform's
database (docs/architecture.md, "Stored responses"). One row per response: the whole
Response object as it was returned, and the request's own input items normalised with
ids (what ``input_items`` lists), both as JSON text. Every read and delete is scoped by
the owner (today the API key) and ignores rows past ``expires_at``: a response that is
unknown, expired or someone else's is the same "not found", so existence never leaks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import ColumnElement, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from forge.config import ResponsesConfig
from forge.db.engine import replica_engine
from forge.db.schema import StoredResponse
from forge.errors import InvalidRequest, NotFound

Order = Literal["asc", "desc"]
ID_MAX = 64  # the id columns' width: a longer id cannot be stored, so it is not found
PRUNE_BATCH = 500  # rows per DELETE: short write locks on SQLite


def previous_not_found(response_id: str) -> NotFound:
    """The one answer for a ``previous_response_id`` that is unknown, expired or owned
    by another key."""
    return NotFound(
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


@dataclass(frozen=True)
class ChainLimits:
    responses: int = 100  # stored responses one conversation may span
    bytes: int = 16 * 1024 * 1024  # stored JSON text it may load


class ResponseStore:
    """Stored Response objects, scoped by owner, kept for ``retention``."""

    def __init__(
        self,
        engine: AsyncEngine,
        retention: timedelta = timedelta(days=30),
        limits: ChainLimits = ChainLimits(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        owns_engine: bool = False,
    ) -> None:
        self._engine = engine
        self.retention = retention
        self.limits = limits
        self._now = clock
        self._owns_engine = owns_engine

    @classmethod
    def open(cls, url: str, config: ResponsesConfig) -> ResponseStore:
        """A store on its own engine: a small pool on PostgreSQL."""
        store = cls.on(replica_engine(url, config.pool_size), config)
        store._owns_engine = True
        return store

    @classmethod
    def on(cls, engine: AsyncEngine, config: ResponsesConfig) -> ResponseStore:
        """A store on ``engine`` (a gateway replica's pool, shared), as configured."""
        return cls(
            engine,
            retention=timedelta(days=config.retention_days),
            limits=ChainLimits(config.max_chain, config.max_chain_bytes),
        )

    async def close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    # ------------------------------------------------------------------ writes

    async def save(
        self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]]
    ) -> None:
        """Store a finished Response (its ``id`` is the key) and its normalised input
        items; committed when this returns, so any replica can read it at once."""
        now = self._now()
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(StoredResponse).values(
                    id=response["id"],
                    project_id=owner,
                    model=str(response.get("model", ""))[:200],
                    created_at=now,
                    expires_at=now + self.retention,
                    previous_response_id=response.get("previous_response_id"),
                    response=orjson.dumps(response).decode(),
                    input_items=orjson.dumps(input_items).decode(),
                )
            )

    async def delete(self, response_id: str, owner: str) -> bool:
        """Delete the owner's live response; False when there is none to delete."""
        if len(response_id) > ID_MAX:
            return False
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(StoredResponse).where(
                    StoredResponse.id == response_id,
                    StoredResponse.project_id == owner,
                    StoredResponse.expires_at > self._now(),
                )
            )
        return bool(result.rowcount)

    async def prune_expired(self, batch: int = PRUNE_BATCH) -> int:
        """Delete every expired response, ``batch`` rows per statement; how many went."""
        total = 0
        while True:
            async with self._engine.begin() as conn:
                ids = select(StoredResponse.id).where(StoredResponse.expires_at <= self._now())
                result = await conn.execute(
                    delete(StoredResponse).where(
                        StoredResponse.id.in_(ids.limit(batch).scalar_subquery())
                    )
                )
            done = max(result.rowcount, 0)
            total += done
            if done < batch:
                return total

    # ------------------------------------------------------------------ reads

    def _live(self, response_id: str, owner: str) -> tuple[ColumnElement[bool], ...]:
        return (
            StoredResponse.id == response_id,
            StoredResponse.project_id == owner,
            StoredResponse.expires_at > self._now(),
        )

    async def get(self, response_id: str, owner: str) -> dict[str, Any] | None:
        """The Response as it was returned, or None (unknown, expired, not the owner's)."""
        if len(response_id) > ID_MAX:
            return None
        async with self._engine.connect() as conn:
            text = await conn.scalar(
                select(StoredResponse.response).where(*self._live(response_id, owner))
            )
        if text is None:
            return None
        stored: dict[str, Any] = orjson.loads(text)
        return stored

    async def input_items(
        self,
        response_id: str,
        owner: str,
        *,
        limit: int = 20,
        order: Order = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> dict[str, Any] | None:
        """One page of the response's input items, as OpenAI's list objects: ``after``
        continues past an item id in ``order``, ``before`` pages back towards the start.
        None when the response is not found; a cursor that is not one of its items is a
        400 naming it."""
        if len(response_id) > ID_MAX:
            return None
        async with self._engine.connect() as conn:
            text = await conn.scalar(
                select(StoredResponse.input_items).where(*self._live(response_id, owner))
            )
        if text is None:
            return None
        items: list[dict[str, Any]] = orjson.loads(text)
        if order == "desc":
            items.reverse()
        ids = [item.get("id") for item in items]
        start, end = 0, len(items)
        for name, cursor in (("after", after), ("before", before)):
            if cursor is None:
                continue
            if cursor not in ids:
                raise InvalidRequest(
                    f"No input item with id '{cursor}' in response '{response_id}'.",
                    param=name,
                    code="invalid_value",
                )
            if name == "after":
                start = max(start, ids.index(cursor) + 1)
            else:
                end = min(end, ids.index(cursor))
        if before is not None and after is None:  # the page just before the cursor
            page = items[max(start, end - limit) : end]
            has_more = end - len(page) > start
        else:
            page = items[start : min(end, start + limit)]
            has_more = start + len(page) < end
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": has_more,
        }

    async def conversation(self, response_id: str, owner: str) -> list[dict[str, Any]]:
        """The items a request continuing ``response_id`` prepends to its own input: for
        each response of the chain, oldest first, its input items and then its output
        items. The chain is walked back through ``previous_response_id``, at most
        ``limits.responses`` responses and ``limits.bytes`` of stored JSON (a 400 past
        either); an ancestor deleted or expired since ends the walk there (the
        conversation starts after it). The response itself must be live and the owner's,
        else the one "not found" answer."""
        rows: list[tuple[str, str]] = []
        size = 0
        current: str | None = response_id
        now = self._now()
        async with self._engine.connect() as conn:
            while current is not None and len(current) <= ID_MAX:
                row = (
                    await conn.execute(
                        select(
                            StoredResponse.input_items,
                            StoredResponse.response,
                            StoredResponse.previous_response_id,
                        ).where(
                            StoredResponse.id == current,
                            StoredResponse.project_id == owner,
                            StoredResponse.expires_at > now,
                        )
                    )
                ).first()
                if row is None:
                    break
                if len(rows) == self.limits.responses:
                    raise self._too_long(f"more than {self.limits.responses} responses")
                size += len(row.input_items) + len(row.response)
                if size > self.limits.bytes:
                    raise self._too_long(f"more than {self.limits.bytes} bytes of items")
                rows.append((row.input_items, row.response))
                current = row.previous_response_id
        if not rows:
            raise previous_not_found(response_id)
        items: list[dict[str, Any]] = []
        for input_text, response_text in reversed(rows):
            items += orjson.loads(input_text)
            items += orjson.loads(response_text).get("output") or []
        return items

    @staticmethod
    def _too_long(what: str) -> InvalidRequest:
        return InvalidRequest(
            f"The conversation behind previous_response_id is too long ({what}): start a "
            "new one, sending the items it needs in `input`.",
            param="previous_response_id",
            code="conversation_too_long",
        )
