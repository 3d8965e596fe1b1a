"""Stored responses through the in-process gateway, driven by the official `openai` SDK:
`store` (the default), retrieve, delete, `input_items` pages, `previous_response_id`
conversations, `item_reference` input items, and one 404 for unknown, expired and
someone else's. Every object checked against OpenAI's own schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import orjson
import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from forge.db.schema import StoredResponse
from tests.specs.validate import violations
from tests.unit.harness import in_process_gateway, platform_config
from tests.unit.test_responses_in_process import TOOL, WORDS, sse_events

NOT_FOUND_KEYS = {"message", "type", "param", "code"}


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def call(gw, method: str, path: str, key: str | None = None, **kw: Any):
    return await gw.http.request(method, path, headers=auth(key or gw.user_key), **kw)


async def other_key(gw) -> str:
    """A key of another project of the same organisation (stored responses belong to a
    project: every key of the project shares them)."""
    project = await gw.runtime.tenancy.create_project("org-default", "elsewhere")
    return (await gw.keys.create_key("someone-else", project_id=project.id)).key


async def test_every_key_of_the_project_shares_its_stored_responses(gw, fake_openai):
    mine = await gw.sdk().responses.create(model="gpt-test", input="shared")
    colleague = (await gw.keys.create_key("colleague")).key  # the same (default) project
    found = await call(gw, "GET", f"/v1/responses/{mine.id}", colleague)
    assert found.status_code == 200 and found.json()["id"] == mine.id


def assert_not_found(resp, rid: str, param: str | None = None) -> dict[str, Any]:
    assert resp.status_code == 404, resp.text
    error = resp.json()["error"]
    assert set(error) == NOT_FOUND_KEYS and error["type"] == "invalid_request_error"
    if param is None:
        assert error["message"] == f"Response with id '{rid}' not found."
        assert (error["param"], error["code"]) == (None, "not_found")
    else:
        assert error["message"] == f"Previous response with id '{rid}' not found."
        assert (error["param"], error["code"]) == (param, "previous_response_not_found")
    return error


# ----------------------------------------------------------------- store, retrieve, delete


async def test_stored_by_default_and_retrieved_as_created(gw):
    client = gw.sdk()
    created = await client.responses.create(model="gpt-test", input="hi", metadata={"k": "v"})
    assert created.store is True and created.previous_response_id is None
    got = await client.responses.retrieve(created.id)
    assert got.model_dump() == created.model_dump() and got.output_text == WORDS
    raw = await call(gw, "GET", f"/v1/responses/{created.id}")
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    assert violations("Response", raw.json()) == []
    assert raw.json()["store"] is True


async def test_raw_create_and_retrieve_are_byte_for_byte_the_same_object(gw):
    created = await call(gw, "POST", "/v1/responses", json={"model": "gpt-test", "input": "x"})
    got = await call(gw, "GET", f"/v1/responses/{created.json()['id']}")
    assert got.json() == created.json()


async def test_delete_then_not_found(gw):
    client = gw.sdk()
    created = await client.responses.create(model="gpt-test", input="hi")
    assert await client.responses.delete(created.id) is None  # the SDK returns nothing
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)
    again = await call(gw, "DELETE", f"/v1/responses/{created.id}")
    assert_not_found(again, created.id)
    other = await client.responses.create(model="gpt-test", input="hi")
    raw = await call(gw, "DELETE", f"/v1/responses/{other.id}")
    assert raw.status_code == 200
    assert raw.json() == {"id": other.id, "object": "response", "deleted": True}


async def test_store_false_is_echoed_and_not_retrievable(gw, fake_openai):
    client = gw.sdk()
    created = await client.responses.create(model="gpt-test", input="hi", store=False)
    assert created.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)
    before = len(fake_openai.requests)
    resp = await call(
        gw,
        "POST",
        "/v1/responses",
        json={"model": "gpt-test", "input": "x", "previous_response_id": created.id},
    )
    assert_not_found(resp, created.id, "previous_response_id")
    assert len(fake_openai.requests) == before
    stream = await client.responses.create(model="gpt-test", input="x", store=False, stream=True)
    events = [e async for e in stream]
    assert events[-1].response.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(events[-1].response.id)


async def test_another_projects_key_cannot_see_list_continue_or_delete_it(gw, fake_openai):
    mine = await gw.sdk().responses.create(model="gpt-test", input="secret")
    theirs = await other_key(gw)
    unknown = "resp_" + "0" * 32
    for rid in (mine.id, unknown):  # the same answer: existence never shows
        assert_not_found(await call(gw, "GET", f"/v1/responses/{rid}", theirs), rid)
        assert_not_found(await call(gw, "DELETE", f"/v1/responses/{rid}", theirs), rid)
        assert_not_found(await call(gw, "GET", f"/v1/responses/{rid}/input_items", theirs), rid)
        body = {"model": "gpt-test", "input": "x", "previous_response_id": rid}
        resp = await call(gw, "POST", "/v1/responses", theirs, json=body)
        assert_not_found(resp, rid, "previous_response_id")
    with pytest.raises(openai.NotFoundError):
        await gw.sdk(theirs).responses.retrieve(mine.id)
    assert (await gw.sdk().responses.retrieve(mine.id)).id == mine.id  # still there


async def test_expired_is_not_found(gw):
    client = gw.sdk()
    created = await client.responses.create(model="gpt-test", input="hi")
    async with gw.engine.begin() as conn:
        await conn.execute(
            update(StoredResponse)
            .where(StoredResponse.id == created.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert_not_found(await call(gw, "GET", f"/v1/responses/{created.id}"), created.id)
    assert_not_found(await call(gw, "DELETE", f"/v1/responses/{created.id}"), created.id)
    body = {"model": "gpt-test", "input": "x", "previous_response_id": created.id}
    resp = await call(gw, "POST", "/v1/responses", json=body)
    assert_not_found(resp, created.id, "previous_response_id")
    assert await gw.runtime.responses.prune_expired() == 1


# ----------------------------------------------------------------- input items


async def test_input_items_pages_through_the_sdk(gw):
    client = gw.sdk()
    inputs: list[Any] = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "input_text", "text": "one"}]},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
            ],
        },
    ]
    created = await client.responses.create(model="gpt-test", input=inputs)
    page = await client.responses.input_items.list(created.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    assert page.data[0].content[0].text == "look"  # newest first by default
    everything = [item async for item in client.responses.input_items.list(created.id, limit=2)]
    assert len(everything) == 5 and len({item.id for item in everything}) == 5
    ascending = await client.responses.input_items.list(created.id, order="asc", limit=100)
    assert [item.id for item in ascending.data] == [item.id for item in reversed(everything)]
    assert [item.role for item in ascending.data] == [
        "developer",
        "user",
        "assistant",
        "user",
        "user",
    ]
    assert not ascending.has_more
    second = await client.responses.input_items.list(
        created.id, order="asc", limit=2, after=ascending.data[1].id
    )
    assert [i.id for i in second.data] == [i.id for i in ascending.data[2:4]]
    raw = await call(gw, "GET", f"/v1/responses/{created.id}/input_items?order=asc&limit=5")
    page_json = raw.json()
    assert violations("ResponseItemList", page_json) == []
    assert page_json["first_id"] == page_json["data"][0]["id"]
    assert page_json["last_id"] == page_json["data"][-1]["id"]
    assert page_json["data"][0]["content"] == [{"type": "input_text", "text": "be brief"}]
    assert page_json["data"][2]["content"] == [
        {"type": "output_text", "text": "two", "annotations": [], "logprobs": []}
    ]
    assert page_json["data"][4]["content"][1] == {
        "type": "input_image",
        "image_url": "https://example.com/a.png",
        "detail": "auto",
    }
    before = await call(
        gw,
        "GET",
        f"/v1/responses/{created.id}/input_items",
        params={"order": "asc", "limit": 2, "before": page_json["data"][3]["id"]},
    )
    assert [i["id"] for i in before.json()["data"]] == [i["id"] for i in page_json["data"][1:3]]


async def test_tool_items_are_listed_with_ids(gw):
    client = gw.sdk()
    created = await client.responses.create(
        model="gpt-test",
        input=[
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
        tools=[TOOL],
    )
    raw = await call(gw, "GET", f"/v1/responses/{created.id}/input_items?order=asc")
    body = raw.json()
    assert violations("ResponseItemList", body) == []
    kinds = [(i["type"], i["id"].split("_")[0], i["status"]) for i in body["data"]]
    assert kinds == [
        ("message", "msg", "completed"),
        ("function_call", "fc", "completed"),
        ("function_call_output", "fco", "completed"),
    ]
    listed = await client.responses.input_items.list(created.id)
    assert listed.data[0].type == "function_call_output" and listed.data[0].output == "sunny"


# ----------------------------------------------------------------- conversations


async def test_two_turns_send_the_first_turn_upstream(gw, fake_openai):
    client = gw.sdk()
    first = await client.responses.create(
        model="gpt-test", instructions="first rules", input="My name is Ada."
    )
    second = await client.responses.create(
        model="gpt-test", previous_response_id=first.id, input="What is my name?"
    )
    assert second.previous_response_id == first.id and second.store is True
    sent = fake_openai.requests[-1]["body"]["messages"]
    # as OpenAI: the earlier turn's items, not its instructions
    assert sent == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": WORDS},
        {"role": "user", "content": "What is my name?"},
    ]
    third = await client.responses.create(
        model="gpt-test",
        previous_response_id=second.id,
        instructions="new rules",
        input=[{"role": "user", "content": "And again?"}],
    )
    sent = fake_openai.requests[-1]["body"]["messages"]
    assert sent[0] == {"role": "system", "content": "new rules"}
    assert [m["role"] for m in sent[1:]] == ["user", "assistant"] * 2 + ["user"]
    assert (await client.responses.retrieve(third.id)).previous_response_id == second.id
    # the input items listed are the request's own
    items = await client.responses.input_items.list(third.id)
    assert [i.content[0].text for i in items.data] == ["And again?"]


async def test_a_tool_call_answered_in_the_next_turn(gw, fake_openai):
    client = gw.sdk()
    first = await client.responses.create(model="gpt-test", input="weather?", tools=[TOOL])
    [fc] = first.output
    assert fc.type == "function_call"
    second = await client.responses.create(
        model="gpt-test",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": fc.call_id, "output": "sunny"}],
        tools=[TOOL],
        tool_choice="none",
    )
    assert second.output_text == WORDS
    sent = fake_openai.requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == fc.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": fc.call_id, "content": "sunny"}
    orphan = await call(
        gw,
        "POST",
        "/v1/responses",
        json={
            "model": "gpt-test",
            "previous_response_id": first.id,
            "input": [{"type": "function_call_output", "call_id": "call_x", "output": "?"}],
        },
    )
    assert orphan.status_code == 400
    assert orphan.json()["error"]["param"] == "input[0].call_id"


# ----------------------------------------------------------------- item references


async def test_item_references_take_the_stored_items(gw, fake_openai):
    """What the Vercel AI SDK sends for earlier output when `store` is on: an
    `item_reference` by id (typed or not), in place of the item itself."""
    client = gw.sdk()
    first = await client.responses.create(model="gpt-test", input="hi")
    [message] = first.output
    second = await client.responses.create(
        model="gpt-test",
        input=[
            {"role": "user", "content": "hi"},
            {"type": "item_reference", "id": message.id},
            {"role": "user", "content": "again"},
        ],
    )
    assert second.output_text == WORDS and second.previous_response_id is None
    assert fake_openai.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": WORDS},
        {"role": "user", "content": "again"},
    ]
    listed = await client.responses.input_items.list(second.id, order="asc")
    assert listed.data[1].id == message.id and listed.data[1].type == "message"
    assert (
        violations("Response", (await call(gw, "GET", f"/v1/responses/{second.id}")).json()) == []
    )
    # a function call by reference, answered in the same input: checked once resolved
    calling = await client.responses.create(model="gpt-test", input="weather?", tools=[TOOL])
    [fc] = calling.output
    answered = await call(
        gw,
        "POST",
        "/v1/responses",
        json={
            "model": "gpt-test",
            "input": [
                {"role": "user", "content": "weather?"},
                {"id": fc.id},
                {"type": "function_call_output", "call_id": fc.call_id, "output": "sunny"},
            ],
            "tools": [TOOL],
            "stream": True,
        },
    )
    assert sse_events(answered.text)[-1]["type"] == "response.completed"
    sent = fake_openai.requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == fc.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": fc.call_id, "content": "sunny"}
    orphan = await call(
        gw,
        "POST",
        "/v1/responses",
        json={
            "model": "gpt-test",
            "input": [
                {"type": "item_reference", "id": message.id},
                {"type": "function_call_output", "call_id": "call_x", "output": "?"},
            ],
        },
    )
    assert orphan.status_code == 400 and orphan.json()["error"]["param"] == "input[1].call_id"


async def test_an_item_reference_not_found(gw):
    """Unknown, another key's, unstored or not an output item: the same 404 naming it."""
    client = gw.sdk()
    mine = await client.responses.create(model="gpt-test", input="secret")
    unstored = await client.responses.create(model="gpt-test", input="x", store=False)
    theirs = await other_key(gw)
    cases = [
        (theirs, mine.output[0].id),
        (gw.user_key, unstored.output[0].id),
        (gw.user_key, mine.output[0].id[:-1] + "9"),  # its response, not one of its items
        (gw.user_key, "msg_" + "0" * 36),
        (gw.user_key, "msg_1"),
    ]
    for key, ref in cases:
        reference = {"type": "item_reference", "id": ref}
        body = {"model": "gpt-test", "input": [{"role": "user", "content": "hi"}, reference]}
        resp = await call(gw, "POST", "/v1/responses", key, json=body)
        assert resp.status_code == 404, resp.text
        error = resp.json()["error"]
        assert error == {
            "message": f"Item with id '{ref}' not found.",
            "type": "invalid_request_error",
            "param": "input[1].id",
            "code": "item_not_found",
        }


async def test_a_refusal_caused_by_the_history_names_previous_response_id(gw):
    first = await call(
        gw,
        "POST",
        "/v1/responses",
        json={
            "model": "gpt-test",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what?"},
                        {"type": "input_image", "image_url": "https://example.com/a.png"},
                    ],
                }
            ],
        },
    )
    body = {"model": "text-only", "input": "and now?", "previous_response_id": first.json()["id"]}
    resp = await call(gw, "POST", "/v1/responses", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "previous_response_id"


# ----------------------------------------------------------------- streams


async def test_streamed_response_is_stored_as_its_completed_event_says(gw):
    raw = await call(
        gw, "POST", "/v1/responses", json={"model": "gpt-test", "input": "hi", "stream": True}
    )
    events = sse_events(raw.text)
    assert events[-1]["type"] == "response.completed"
    final = events[-1]["response"]
    assert final["store"] is True
    got = await call(gw, "GET", f"/v1/responses/{final['id']}")
    assert got.json() == final
    client = gw.sdk()
    stream = await client.responses.create(model="gpt-test", input="hi", stream=True)
    done = [e async for e in stream][-1].response
    stored = await client.responses.retrieve(done.id)
    assert stored.model_dump() == done.model_dump()
    follow = await client.responses.create(
        model="gpt-test", previous_response_id=done.id, input="more", stream=True
    )
    last = [e async for e in follow][-1]
    assert last.response.previous_response_id == done.id


async def test_a_failed_stream_is_not_stored(gw):
    raw = await call(
        gw,
        "POST",
        "/v1/responses",
        json={"model": "midstream-error", "input": "x", "stream": True},
    )
    failed = sse_events(raw.text)[-1]
    assert failed["type"] == "response.failed"
    rid = failed["response"]["id"]
    assert_not_found(await call(gw, "GET", f"/v1/responses/{rid}"), rid)


async def test_a_store_that_fails_is_a_503_or_an_error_event(gw, monkeypatch):
    async def broken(*_: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(gw.runtime.responses, "save", broken)
    resp = await call(gw, "POST", "/v1/responses", json={"model": "gpt-test", "input": "x"})
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    error = resp.json()["error"]
    assert set(error) == NOT_FOUND_KEYS and "could not be stored" in error["message"]
    raw = await call(
        gw, "POST", "/v1/responses", json={"model": "gpt-test", "input": "x", "stream": True}
    )
    events = sse_events(raw.text)
    assert events[-1]["type"] == "error" and "could not be stored" in events[-1]["message"]
    assert "response.completed" not in [e["type"] for e in events]
    # store=false does not touch the store
    ok = await call(
        gw, "POST", "/v1/responses", json={"model": "gpt-test", "input": "x", "store": False}
    )
    assert ok.status_code == 200


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("suffix", "param", "code"),
    [
        ("/input_items?limit=0", "limit", "invalid_value"),
        ("/input_items?limit=101", "limit", "invalid_value"),
        ("/input_items?limit=ten", "limit", "invalid_value"),
        ("/input_items?order=sideways", "order", "invalid_value"),
        ("/input_items?after=msg_nope", "after", "invalid_value"),
        ("/input_items?before=msg_nope", "before", "invalid_value"),
        ("/input_items?include=message.input_image.image_url", "include", "unsupported_parameter"),
        ("?include=message.input_image.image_url", "include", "unsupported_parameter"),
        ("?stream=true", "stream", "unsupported_parameter"),
    ],
)
async def test_bad_queries_are_400_naming_the_param(gw, suffix, param, code):
    created = await gw.sdk().responses.create(model="gpt-test", input="hi")
    resp = await call(gw, "GET", f"/v1/responses/{created.id}{suffix}")
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == NOT_FOUND_KEYS and error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)


async def test_routes_need_a_key(gw):
    for method, path in (
        ("GET", "/v1/responses/resp_1"),
        ("DELETE", "/v1/responses/resp_1"),
        ("GET", "/v1/responses/resp_1/input_items"),
    ):
        resp = await gw.http.request(method, path, headers=auth("sk-forge-wrong"))
        assert resp.status_code == 401
        assert resp.json()["error"]["type"] == "authentication_error"


async def test_a_long_or_odd_id_is_just_not_found(gw):
    for rid in ("resp_" + "x" * 500, "%E2%9C%93", "resp_1'; DROP TABLE responses; --"):
        resp = await call(gw, "GET", f"/v1/responses/{rid}")
        assert resp.status_code == 404
        assert orjson.loads(resp.content)["error"]["code"] == "not_found"
