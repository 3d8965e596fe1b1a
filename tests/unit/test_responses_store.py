"""Stored responses (`forge.responses_store`) on SQLite and PostgreSQL: scoped by owner,
expired = not found, cursor pages of input items, conversations walked and bounded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import func, inspect, select

from forge.db.migrate import alembic_config
from forge.db.schema import StoredResponse
from forge.errors import InvalidRequest, NotFound
from forge.responses_store import ChainLimits, ResponseStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def response(rid: str, previous: str | None = None, text: str = "hi") -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "model": "m",
        "previous_response_id": previous,
        "status": "completed",
        "output": [
            {
                "id": f"msg_out_{rid}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
    }


def user_item(iid: str, text: str = "q") -> dict[str, Any]:
    return {
        "id": iid,
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


async def rows(engine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(StoredResponse)))


async def test_saved_response_comes_back_whole_to_its_owner_only(engine):
    store = ResponseStore(engine)
    saved = response("resp_1") | {"metadata": {"k": "ü"}, "usage": {"input_tokens": 3}}
    await store.save("key-a", saved, [user_item("msg_1")])
    assert await store.get("resp_1", "key-a") == saved
    assert await store.get("resp_1", "key-b") is None
    assert await store.get("resp_2", "key-a") is None
    assert await store.get("resp_" + "x" * 300, "key-a") is None  # past the column: not found


async def test_delete_is_scoped_and_says_whether_it_deleted(engine):
    store = ResponseStore(engine)
    await store.save("key-a", response("resp_1"), [])
    assert await store.delete("resp_1", "key-b") is False
    assert await store.get("resp_1", "key-a") is not None
    assert await store.delete("resp_1", "key-a") is True
    assert await store.get("resp_1", "key-a") is None
    assert await store.delete("resp_1", "key-a") is False
    assert await rows(engine) == 0


async def test_expired_is_not_found_and_pruned(engine):
    clock = Clock()
    store = ResponseStore(engine, retention=timedelta(days=1), clock=clock)
    for i in range(5):
        await store.save("key-a", response(f"resp_old{i}"), [user_item(f"msg_{i}")])
    clock.now += timedelta(hours=23)
    await store.save("key-a", response("resp_new"), [user_item("msg_new")])
    assert await store.get("resp_old0", "key-a") is not None
    clock.now += timedelta(hours=2)  # the first five are past their day
    assert await store.get("resp_old0", "key-a") is None
    assert await store.delete("resp_old1", "key-a") is False
    assert await store.input_items("resp_old2", "key-a") is None
    with pytest.raises(NotFound) as err:
        await store.conversation("resp_old3", "key-a")
    assert err.value.param == "previous_response_id"
    assert await rows(engine) == 6  # not found is not gone: the prune deletes
    assert await store.prune_expired(batch=2) == 5  # several statements of 2
    assert await rows(engine) == 1
    assert await store.get("resp_new", "key-a") is not None
    assert await store.prune_expired() == 0


async def test_input_items_pages_like_openai_lists(engine):
    store = ResponseStore(engine)
    items = [user_item(f"msg_{i}", text=str(i)) for i in range(5)]
    await store.save("key-a", response("resp_1"), items)

    async def ids(**kw: Any) -> tuple[list[str], dict[str, Any]]:
        page = await store.input_items("resp_1", "key-a", **kw)
        assert page is not None and page["object"] == "list"
        got = [item["id"] for item in page["data"]]
        assert (page["first_id"], page["last_id"]) == ((got[0], got[-1]) if got else (None, None))
        return got, page

    got, page = await ids()  # desc, 20
    assert got == [f"msg_{i}" for i in (4, 3, 2, 1, 0)] and not page["has_more"]
    assert page["data"][0] == items[4]
    got, page = await ids(limit=2)
    assert got == ["msg_4", "msg_3"] and page["has_more"]
    got, page = await ids(limit=2, after="msg_3")
    assert got == ["msg_2", "msg_1"] and page["has_more"]
    got, page = await ids(limit=2, after="msg_1")
    assert got == ["msg_0"] and not page["has_more"]
    got, page = await ids(limit=2, order="asc")
    assert got == ["msg_0", "msg_1"] and page["has_more"]
    got, page = await ids(limit=3, order="asc", after="msg_1")
    assert got == ["msg_2", "msg_3", "msg_4"] and not page["has_more"]
    got, page = await ids(limit=2, order="asc", before="msg_4")  # the page just before
    assert got == ["msg_2", "msg_3"] and page["has_more"]
    got, page = await ids(limit=5, order="asc", before="msg_2")
    assert got == ["msg_0", "msg_1"] and not page["has_more"]
    got, page = await ids(order="asc", after="msg_0", before="msg_3")
    assert got == ["msg_1", "msg_2"] and not page["has_more"]
    got, page = await ids(after="msg_0")  # past the end: an empty page
    assert got == [] and not page["has_more"]
    with pytest.raises(InvalidRequest) as err:
        await store.input_items("resp_1", "key-a", after="msg_nope")
    assert (err.value.param, err.value.code) == ("after", "invalid_value")
    assert await store.input_items("resp_1", "key-b") is None
    assert await store.input_items("resp_2", "key-a") is None


async def test_conversation_walks_the_chain_oldest_first(engine):
    store = ResponseStore(engine)
    await store.save("key-a", response("resp_1", text="a1"), [user_item("msg_1", "q1")])
    await store.save("key-a", response("resp_2", "resp_1", "a2"), [user_item("msg_2", "q2")])
    await store.save("key-a", response("resp_3", "resp_2", "a3"), [user_item("msg_3", "q3")])
    items = await store.conversation("resp_3", "key-a")
    assert [i["id"] for i in items] == [
        "msg_1",
        "msg_out_resp_1",
        "msg_2",
        "msg_out_resp_2",
        "msg_3",
        "msg_out_resp_3",
    ]
    assert [i["id"] for i in await store.conversation("resp_1", "key-a")] == [
        "msg_1",
        "msg_out_resp_1",
    ]
    for owner, rid in (("key-b", "resp_3"), ("key-a", "resp_9")):
        with pytest.raises(NotFound) as err:
            await store.conversation(rid, owner)
        assert err.value.message == f"Previous response with id '{rid}' not found."
        assert err.value.status_code == 404
    # an ancestor deleted since: the conversation starts after it
    assert await store.delete("resp_1", "key-a")
    assert (await store.conversation("resp_3", "key-a"))[0]["id"] == "msg_2"


async def test_conversation_is_bounded(engine):
    store = ResponseStore(engine, limits=ChainLimits(responses=3, bytes=10_000))
    previous = None
    for i in range(4):
        await store.save("key-a", response(f"resp_{i}", previous), [user_item(f"msg_{i}")])
        previous = f"resp_{i}"
    assert len(await store.conversation("resp_2", "key-a")) == 6  # three responses: fits
    with pytest.raises(InvalidRequest) as err:
        await store.conversation("resp_3", "key-a")
    assert (err.value.param, err.value.code) == ("previous_response_id", "conversation_too_long")
    big = ResponseStore(engine, limits=ChainLimits(responses=100, bytes=2_000))
    await big.save("key-a", response("resp_big", "resp_3", "x" * 1_500), [])
    with pytest.raises(InvalidRequest, match="bytes"):
        await big.conversation("resp_big", "key-a")


async def test_migration_adds_and_drops_the_table(db_url, engine):
    def tables(conn: Any) -> tuple[set[str], set[str]]:
        insp = inspect(conn)
        names = set(insp.get_table_names())
        indexes = (
            {ix["name"] for ix in insp.get_indexes("responses")} if "responses" in names else set()
        )
        return names, indexes

    async with engine.connect() as conn:
        names, indexes = await conn.run_sync(tables)
    assert "responses" in names
    assert indexes == {"ix_responses_expires", "ix_responses_project_created"}
    await engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0003")
    async with engine.connect() as conn:
        assert "responses" not in (await conn.run_sync(tables))[0]
    await engine.dispose()
    await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
    async with engine.connect() as conn:
        assert "responses" in (await conn.run_sync(tables))[0]
