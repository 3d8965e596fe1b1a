"""Batches through the gateway with the official SDK, in-process: a few hundred lines
over the fake provider and the tiny local model run behind live traffic, with exact
output and error files, across a restart of the replica that runs them and the death
of a runner holding lines; a budget stop pauses the batch and it goes on after; and
the bad inputs the issue names."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from sqlalchemy import select

from forge.batches.store import BatchStore
from forge.config import PlatformConfig
from forge.db.engine import make_sessionmaker
from forge.db.schema import BatchLine, BatchRow
from tests.specs.validate import violations
from tests.unit.harness import in_process_gateway, platform_config

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
CHAT = "/v1/chat/completions"


def line(custom_id: str, model: str, content: str = "hello", url: str = CHAT, **body) -> dict:
    messages = [{"role": "user", "content": content}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"model": model, "messages": messages, "max_tokens": 5, **body},
    }


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def config(fake_openai, tiny_model, files_dir, **batches) -> PlatformConfig:
    """The in-process platform, with files in ``files_dir``: every replica reads them."""
    base = platform_config(fake_openai.base_url).model_dump()
    return PlatformConfig.model_validate(
        {
            **base,
            "providers": [
                *base["providers"],
                {"name": "local", "type": "transformers", "model_path": str(tiny_model)},
            ],
            "models": [*base["models"], {"name": "tiny-llama", "provider": "local"}],
            "batches": {"poll_s": 0.05, **batches},
            "files": {"storage": str(files_dir)},
        }
    )


async def wait_for(client, batch_id: str, check, timeout_s: float = 120):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        batch = await client.batches.retrieve(batch_id)
        if check(batch):
            return batch
        assert asyncio.get_running_loop().time() < deadline, batch
        await asyncio.sleep(0.05)


async def lines_of(client, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [json.loads(x) for x in content.text.splitlines()]


MIXED = (
    [line(f"fake-{i}", "gpt-test", f"question {i}") for i in range(280)]
    + [line(f"tiny-{i}", "tiny-llama") for i in range(8)]
    + [line("unknown-model", "no-such-model"), line("bad-body", "gpt-test", temperature=9)]
)


async def test_a_batch_runs_across_a_restart_and_a_dead_runner(
    fake_openai, tiny_model, sqlite_engine, tmp_path
):
    cfg = config(fake_openai, tiny_model, tmp_path, concurrency=4, claim_s=1.0)
    async with in_process_gateway(cfg, sqlite_engine) as first:
        client = first.sdk()
        data = await client.files.create(file=("batch.jsonl", jsonl(MIXED)), purpose="batch")
        batch = await client.batches.create(
            input_file_id=data.id,
            endpoint=CHAT,
            completion_window="24h",
            metadata={"run": "nightly"},
        )
        assert batch.status == "in_progress" and batch.request_counts.total == len(MIXED)
        assert violations("Batch", batch.model_dump(exclude_unset=True)) == []
        await wait_for(client, batch.id, lambda b: b.request_counts.completed >= 20)
        # the file is in use until the batch ends
        with pytest.raises(openai.ConflictError):
            await client.files.delete(data.id)
    # the replica is gone (its runner wrote what ran and handed the rest back); a runner
    # elsewhere dies holding lines: their claims run out and the next replica takes them
    dead = BatchStore(make_sessionmaker(sqlite_engine), first.runtime.files, claim_s=1.0)
    held = await dead.claim("runner-that-dies", 5)
    assert held  # (a claim of the closed replica, finishing late, may take some of the 5)
    async with in_process_gateway(cfg, sqlite_engine) as second:
        client = second.sdk()
        done = await wait_for(client, batch.id, lambda b: b.status == "completed")
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (len(MIXED), len(MIXED) - 2, 2)
    assert violations("Batch", done.model_dump(exclude_unset=True)) == []
    assert done.metadata == {"run": "nightly"} and done.completed_at and done.finalizing_at

    async with in_process_gateway(cfg, sqlite_engine) as third:
        client = third.sdk()
        output = await lines_of(client, done.output_file_id)
        errors = await lines_of(client, done.error_file_id)
        assert (await client.files.retrieve(done.output_file_id)).purpose == "batch_output"
        assert (await client.files.delete(data.id)).deleted  # finished: free to go
    # every line exactly once, in input order, each answer its own request's
    assert [o["custom_id"] for o in output] == [r["custom_id"] for r in MIXED[:-2]]
    for row in output:
        assert row["response"]["status_code"] == 200 and row["error"] is None
        assert row["response"]["body"]["object"] == "chat.completion"
        assert row["id"].startswith("batch_req_") and row["response"]["request_id"]
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [
        ("unknown-model", 404),
        ("bad-body", 400),
    ]
    assert errors[1]["response"]["body"]["error"]["param"] == "temperature"


async def test_a_budget_stop_pauses_the_batch_and_it_goes_on(
    fake_openai, tiny_model, sqlite_engine, tmp_path
):
    cfg = config(fake_openai, tiny_model, tmp_path, concurrency=2)
    async with in_process_gateway(cfg, sqlite_engine) as gw:
        admin = {"authorization": f"Bearer {gw.admin_key}"}
        project = "proj_default"  # the user key's
        budget = await gw.http.post(
            "/admin/budgets",
            json={"scope": "project", "subject_id": project, "unit": "requests", "limit": 5},
            headers=admin,
        )
        assert budget.status_code in (200, 201), budget.text
        client = gw.sdk()
        rows = [line(f"q{i}", "gpt-test") for i in range(12)]
        data = await client.files.create(file=("b.jsonl", jsonl(rows)), purpose="batch")
        batch = await client.batches.create(
            input_file_id=data.id, endpoint=CHAT, completion_window="24h"
        )
        paused = await wait_for(
            client, batch.id, lambda b: getattr(b, "pause_reason", None) is not None
        )
        assert paused.status == "in_progress" and "budget" in paused.pause_reason
        assert paused.request_counts.completed <= 5 and paused.request_counts.failed == 0
        # the budget lifted: the batch goes on where it stopped, nothing lost
        lifted = await gw.http.delete(f"/admin/budgets/{budget.json()['id']}", headers=admin)
        assert lifted.status_code == 200, lifted.text
        async with gw.engine.begin() as conn:  # don't wait out the minute's pause here
            await conn.execute(
                BatchRow.__table__.update().where(BatchRow.id == batch.id).values(paused_until=None)
            )
        done = await wait_for(client, batch.id, lambda b: b.status == "completed")
        assert done.request_counts.completed == 12 and getattr(done, "pause_reason", None) is None
        output = await lines_of(client, done.output_file_id)
        assert sorted(o["custom_id"] for o in output) == sorted(r["custom_id"] for r in rows)


async def test_cancel_list_and_bad_input(fake_openai, tiny_model, sqlite_engine, tmp_path):
    cfg = config(fake_openai, tiny_model, tmp_path, run=False)  # nothing runs: the batch stays put
    async with in_process_gateway(cfg, sqlite_engine) as gw:
        client = gw.sdk()
        rows = [line(f"q{i}", "gpt-test") for i in range(3)]
        data = await client.files.create(file=("b.jsonl", jsonl(rows)), purpose="batch")
        tuning = await client.files.create(
            file=("t.jsonl", jsonl([{"messages": [{"role": "user", "content": "a"},
                                                  {"role": "assistant", "content": "b"}]}])),
            purpose="fine-tune",
        )  # fmt: skip
        first = await client.batches.create(
            input_file_id=data.id, endpoint=CHAT, completion_window="24h"
        )
        second = await client.batches.create(
            input_file_id=data.id, endpoint=CHAT, completion_window="24h"
        )
        page = await client.batches.list(limit=1)
        assert [b.id for b in page.data] == [second.id] and page.has_more
        assert [b.id async for b in client.batches.list()] == [second.id, first.id]
        cancelling = await client.batches.cancel(first.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
        await BatchStore(make_sessionmaker(gw.engine), gw.runtime.files).settle()
        cancelled = await client.batches.retrieve(first.id)
        assert cancelled.status == "cancelled" and cancelled.output_file_id is None
        with pytest.raises(openai.ConflictError):
            await client.batches.cancel(first.id)

        cases = [
            ({"input_file_id": "file-nope"}, "input_file_id"),
            ({"input_file_id": tuning.id}, "input_file_id"),
            ({"endpoint": "/v1/responses"}, "endpoint"),
            ({"completion_window": "1h"}, "completion_window"),
        ]
        for change, param in cases:
            args = {"input_file_id": data.id, "endpoint": CHAT, "completion_window": "24h"}
            with pytest.raises(openai.BadRequestError) as refused:
                await client.batches.create(**{**args, **change})
            assert refused.value.param == param, change
        with pytest.raises(openai.NotFoundError):
            await client.batches.retrieve("batch_nope")


async def test_lines_for_another_endpoint_are_error_lines(
    fake_openai, tiny_model, sqlite_engine, tmp_path
):
    cfg = config(fake_openai, tiny_model, tmp_path)
    async with in_process_gateway(cfg, sqlite_engine) as gw:
        client = gw.sdk()
        rows = [
            {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
             "body": {"model": "embed-test", "input": "x"}}
            for i in range(3)
        ]  # fmt: skip
        data = await client.files.create(file=("e.jsonl", jsonl(rows)), purpose="batch")
        batch = await client.batches.create(
            input_file_id=data.id, endpoint=CHAT, completion_window="24h"
        )
        done = await wait_for(client, batch.id, lambda b: b.status == "completed")
        assert (done.request_counts.completed, done.request_counts.failed) == (0, 3)
        errors = await lines_of(client, done.error_file_id)
        assert [e["response"]["body"]["error"]["code"] for e in errors] == ["invalid_url"] * 3
        assert done.output_file_id is None
        async with gw.engine.connect() as conn:
            left = (await conn.execute(select(BatchLine.status))).scalars().all()
        assert set(left) == {"failed"}
