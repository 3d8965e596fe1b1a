"""The Files API through the in-process gateway, driven by the official `openai` SDK:
upload (streamed to storage, validated for its purpose, errors naming the line), list,
retrieve, content, delete; one 404 for unknown, deleted, expired and another project's;
every object checked against OpenAI's own schemas."""

from __future__ import annotations

from datetime import timedelta

import openai
import orjson
import pytest
from sqlalchemy import select, update

from forge.db.schema import StoredFile, utcnow
from tests.specs.validate import violations
from tests.unit.harness import in_process_gateway, platform_config


def chat_line(question: str, answer: str) -> bytes:
    messages = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]
    return orjson.dumps({"messages": messages}) + b"\n"


TRAINING = b"".join(chat_line(f"What is {i}+{i}?", str(2 * i)) for i in range(200))
BATCH = b"".join(
    orjson.dumps(
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
        }
    )
    + b"\n"
    for i in range(50)
)


@pytest.fixture
async def gw(fake_openai, engine):
    config = platform_config(fake_openai.base_url)
    config = config.model_copy(
        update={"files": config.files.model_copy(update={"max_bytes": 64 * 1024})}
    )
    async with in_process_gateway(config, engine) as h:
        yield h


async def other_project_key(gw) -> str:
    project = await gw.runtime.tenancy.create_project("org-default", "elsewhere")
    return (await gw.keys.create_key("someone-else", project_id=project.id)).key


async def test_upload_list_retrieve_content_delete_with_the_sdk(gw):
    client = gw.sdk()
    created = await client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune")
    body = created.model_dump(exclude_unset=True)
    assert violations("OpenAIFile", body) == []
    assert created.id.startswith("file-") and created.bytes == len(TRAINING)
    assert (created.filename, created.purpose, created.status) == (
        "train.jsonl",
        "fine-tune",
        "processed",
    )
    batch = await client.files.create(file=("requests.jsonl", BATCH), purpose="batch")

    listed = await client.files.list()
    assert [f.id for f in listed.data] == [batch.id, created.id]  # newest first
    raw = await gw.http.get("/v1/files", headers={"authorization": f"Bearer {gw.user_key}"})
    assert violations("ListFilesResponse", raw.json()) == []
    only = await client.files.list(purpose="batch")
    assert [f.id for f in only.data] == [batch.id]
    page = await client.files.list(limit=1, order="asc")
    assert [f.id for f in page.data] == [created.id] and page.has_more

    assert (await client.files.retrieve(created.id)).model_dump() == created.model_dump()
    content = await client.files.content(created.id)
    assert content.content == TRAINING

    colleague = gw.sdk((await gw.keys.create_key("colleague")).key)  # the same project
    assert (await colleague.files.retrieve(batch.id)).id == batch.id

    deleted = await client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    assert violations("DeleteFileResponse", deleted.model_dump()) == []
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.files.content(created.id)
    async with gw.engine.connect() as conn:
        left = (await conn.execute(select(StoredFile.id))).scalars().all()
    assert left == [batch.id]
    assert not list(gw.runtime.files.storage._fs.find(gw.runtime.files.storage._path("")))[1:]


async def test_a_file_that_fails_validation_is_a_400_naming_its_lines_and_is_not_kept(gw):
    client = gw.sdk()
    good = chat_line("a", "b") + chat_line("c", "d")
    bad = good + b'{"messages": [{"role": "bot", "content": "x"}]}\n' + b"not json\n"
    with pytest.raises(openai.BadRequestError) as err:
        await client.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    error = err.value.body
    assert (error["param"], error["code"]) == ("file", "invalid_file_format")
    assert "line 3: messages[0].role" in error["message"] and "line 4:" in error["message"]
    with pytest.raises(openai.BadRequestError) as err:
        await client.files.create(file=("b.jsonl", BATCH + BATCH.split(b"\n")[0]), purpose="batch")
    assert "line 51" in err.value.body["message"] and "custom_id" in err.value.body["message"]
    assert (await client.files.list()).data == []
    storage = gw.runtime.files.storage
    assert not [p for p in storage._fs.find(storage._path("")) if "file-" in p]


async def test_bad_forms_are_400s_and_a_file_past_the_limit_a_413(gw):
    client = gw.sdk()
    with pytest.raises(openai.BadRequestError) as err:
        await client.files.create(file=("a.jsonl", chat_line("a", "b")), purpose="assistants")
    assert err.value.body["param"] == "purpose"
    with pytest.raises(openai.APIStatusError) as too_big:
        await client.files.create(file=("big.jsonl", TRAINING * 4), purpose="fine-tune")
    assert too_big.value.status_code == 413 and too_big.value.body["param"] == "file"
    headers = {"authorization": f"Bearer {gw.user_key}"}
    not_form = await gw.http.post("/v1/files", headers=headers, json={"purpose": "batch"})
    assert not_form.status_code == 400 and not_form.json()["error"]["param"] == "file"
    no_file = await gw.http.post("/v1/files", headers=headers, data={"purpose": "batch"})
    assert no_file.status_code == 400 and "'file'" in no_file.json()["error"]["message"]
    broken = await gw.http.post(
        "/v1/files",
        headers={**headers, "content-type": "multipart/form-data; boundary=xyz"},
        content=b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch',
    )
    assert broken.status_code == 400, broken.text
    assert (await client.files.list()).data == []


async def test_purpose_after_the_file_is_still_validated(gw):
    """The SDKs send ``purpose`` first; a hand-made form may not (validated from storage)."""
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + chat_line("a", "b")
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f"batch\r\n--{boundary}--\r\n"
        ).encode()
    )
    resp = await gw.http.post(
        "/v1/files",
        headers={
            "authorization": f"Bearer {gw.user_key}",
            "content-type": f"multipart/form-data; boundary={boundary}",
        },
        content=body,
    )
    assert resp.status_code == 400 and "line 1" in resp.json()["error"]["message"]


async def test_another_projects_key_and_an_expired_file_get_the_same_404(gw):
    client = gw.sdk()
    created = await client.files.create(
        file=("train.jsonl", TRAINING),
        purpose="fine-tune",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert created.expires_at == created.created_at + 3600
    stranger = gw.sdk(await other_project_key(gw))
    for call in (stranger.files.retrieve, stranger.files.content, stranger.files.delete):
        with pytest.raises(openai.NotFoundError) as err:
            await call(created.id)
        assert err.value.body["message"] == f"No such File object: {created.id}"
    assert (await stranger.files.list()).data == []
    async with gw.engine.begin() as conn:
        past = utcnow() - timedelta(seconds=1)
        await conn.execute(update(StoredFile).values(expires_at=past))
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(created.id)
    assert (await client.files.list()).data == []
    with pytest.raises(openai.BadRequestError) as err:
        await client.files.create(
            file=("t.jsonl", chat_line("a", "b")),
            purpose="fine-tune",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert err.value.body["param"] == "expires_after.seconds"


async def test_a_key_limited_to_other_endpoints_may_not_touch_files(gw):
    chat_only = await gw.keys.create_key("chat", allowed_endpoints=["/v1/chat/completions"])
    files_only = await gw.keys.create_key("files", allowed_endpoints=["/v1/files"])
    with pytest.raises(openai.PermissionDeniedError):
        await gw.sdk(chat_only.key).files.list()
    created = await gw.sdk(files_only.key).files.create(
        file=("t.jsonl", chat_line("a", "b")), purpose="fine-tune"
    )
    assert (await gw.sdk(files_only.key).files.content(created.id)).content == chat_line("a", "b")
