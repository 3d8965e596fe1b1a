"""Fine-tuning through the gateway with the official SDK, in-process: upload a chat data
set, create a job, watch the loss fall in its events, get `succeeded`, chat with the `ft:`
model and hear what the base model does not say; and every bad input the issue names.
Jobs run through train.local_launcher (the same run as on Ray Train, in a thread); the
Ray Train path is tests/integration/test_finetune_jobs.py."""

from __future__ import annotations

import asyncio
import json
import re

import openai
import pytest

from forge.config import PlatformConfig
from tests.specs.validate import violations
from tests.unit.harness import in_process_gateway
from tests.unit.test_train_loop import ALL_LINEAR, ANSWER, QUESTION, SYSTEM, chat
from train.local_launcher import LocalLauncher

pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

TRAINING = "".join(json.dumps(chat()) + "\n" for _ in range(31)).encode()
VALIDATION = "".join(json.dumps(chat()) + "\n" for _ in range(2)).encode()
BATCH_LINE = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "tiny-llama", "messages": [QUESTION]}}  # fmt: skip
TUNING = {  # what the train loop's own tests learn with: 2 epochs of 16 steps
    "n_epochs": 2,
    "batch_size": 1,
    "learning_rate_multiplier": 50,  # times 2e-4
    "lora_rank": 8,
    "lora_target_modules": list(ALL_LINEAR),
}


def config_for(tiny_model, max_adapters: int = 1) -> PlatformConfig:
    return PlatformConfig.model_validate(
        {
            "providers": [
                {
                    "name": "local",
                    "type": "transformers",
                    "model_path": str(tiny_model),
                    "max_adapters": max_adapters,
                    "max_lora_rank": 8,
                },
                {"name": "remote", "type": "openai", "base_url": "http://127.0.0.1:9/v1"},
            ],
            "models": [
                {"name": "tiny-llama", "provider": "local", "context_window": 2048},
                {"name": "gpt-x", "provider": "remote"},
            ],
            "fine_tuning": {"max_len": 96, "stop_grace_s": 5},
        }
    )


@pytest.fixture
async def gw(tiny_model, sqlite_engine):
    launcher = LocalLauncher()
    async with in_process_gateway(
        config_for(tiny_model), sqlite_engine, fine_tuning_launcher=launcher
    ) as h:
        yield h


async def upload(client, data: bytes = TRAINING, purpose: str = "fine-tune") -> str:
    return (await client.files.create(file=("data.jsonl", data), purpose=purpose)).id


async def wait_for(client, job_id: str, *statuses: str, timeout_s: float = 300) -> object:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        job = await client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert asyncio.get_running_loop().time() < deadline, f"still {job.status}"
        await asyncio.sleep(0.2)


async def say(client, model: str) -> str:
    reply = await client.chat.completions.create(
        model=model, messages=[SYSTEM, QUESTION], max_tokens=24, temperature=0
    )
    return reply.choices[0].message.content or ""


async def test_a_job_trains_succeeds_and_its_model_answers_as_taught(gw):
    client = gw.sdk()
    train, valid = await upload(client), await upload(client, VALIDATION)
    before = await say(client, "tiny-llama")
    job = await client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=train,
        validation_file=valid,
        suffix="codeword",
        seed=7,
        metadata={"team": "support"},
        method={"type": "supervised", "supervised": {"hyperparameters": TUNING}},
        extra_body={"deploy": True},
    )
    assert job.status in ("queued", "running") and job.fine_tuned_model is None
    assert job.hyperparameters.n_epochs == 2 and job.seed == 7
    done = await wait_for(client, job.id, "succeeded", "failed")
    assert done.status == "succeeded", done.error
    for value in (job, done):  # the objects are OpenAI's
        assert violations("FineTuningJob", value.model_dump(exclude_unset=True)) == []
    assert re.fullmatch(r"ft:tiny-llama:[a-z0-9-]+:codeword:[0-9a-f]{8}", done.fine_tuned_model)
    assert done.trained_tokens and done.trained_tokens > 0 and done.finished_at

    events = [e async for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    for event in events:
        assert violations("FineTuningJobEvent", event.model_dump(exclude_unset=True)) == []
    metrics = [e.data for e in reversed(events) if e.type == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 33))
    assert metrics[-1]["train_loss"] < 0.5 * metrics[0]["train_loss"]
    assert "valid_loss" in metrics[-1]
    messages = [e.message for e in reversed(events) if e.type == "message"]
    assert messages[0].startswith("Validating training file")
    assert messages[-1] == "The job has successfully completed"
    # the validation loss per epoch, and base against tuned on the validation set
    assert [m["step"] for m in metrics if "valid_loss" in m] == [16, 32]
    evaluated = "Evaluated on 2 validation examples: the tuned model gave the expected answer"
    assert any(m.startswith(f"{evaluated} 2 times, the base model 0") for m in messages)
    side_by_side = await client.files.content(done.result_files[0])
    rows = [json.loads(x) for x in side_by_side.text.splitlines()]
    assert [(ANSWER in r["tuned"], ANSWER in r["base"]) for r in rows] == [(True, False)] * 2

    page = await client.fine_tuning.jobs.checkpoints.list(job.id)
    raw = page.model_dump(exclude_unset=True)
    assert violations("ListFineTuningJobCheckpointsResponse", raw) == []
    checkpoints = page.data
    assert [c.step_number for c in checkpoints] == [32, 16]  # one per epoch, newest first
    assert checkpoints[0].fine_tuned_model_checkpoint == done.fine_tuned_model + ":ckpt-step-32"
    assert checkpoints[0].metrics.train_loss == metrics[-1]["train_loss"]

    # deployed at once: it answers, with what it was taught and the base model does not say
    after = await say(client, done.fine_tuned_model)
    assert ANSWER in after and "MANGO" not in before, (before, after)
    listed = [m.id async for m in client.models.list()]
    assert done.fine_tuned_model in listed
    jobs = [j.id async for j in client.fine_tuning.jobs.list(metadata={"team": "support"})]
    assert jobs == [job.id]
    assert [j.id async for j in client.fine_tuning.jobs.list(metadata={"team": "x"})] == []

    # another project sees none of it
    project = await gw.runtime.tenancy.create_project("org-default", "elsewhere")
    other = gw.sdk((await gw.keys.create_key("other", project_id=project.id)).key)
    with pytest.raises(openai.NotFoundError):
        await other.fine_tuning.jobs.retrieve(job.id)
    assert done.fine_tuned_model not in [m.id async for m in other.models.list()]
    with pytest.raises(openai.NotFoundError):
        await say(other, done.fine_tuned_model)

    # the registry: versions, undeploy (the name stops answering), delete
    versions = (await client.get("/fine_tuning/models", cast_to=object))["data"]
    assert [v["id"] for v in versions] == [done.fine_tuned_model] and versions[0]["deployed"]
    path = f"/fine_tuning/models/{done.fine_tuned_model}"
    assert not (await client.post(path + "/undeploy", cast_to=object))["deployed"]
    with pytest.raises(openai.NotFoundError):
        await say(client, done.fine_tuned_model)
    assert (await client.post(path + "/deploy", cast_to=object))["deployed"]
    assert ANSWER in await say(client, done.fine_tuned_model)
    assert (await client.delete(path, cast_to=object))["deleted"]
    assert (await client.get("/fine_tuning/models", cast_to=object))["data"] == []

    with pytest.raises(openai.ConflictError) as finished:
        await client.fine_tuning.jobs.cancel(job.id)
    assert finished.value.code == "job_already_finished"


@pytest.fixture
async def idle_gw(tiny_model, sqlite_engine):
    """A gateway whose launcher has no room: jobs stay queued."""
    launcher = LocalLauncher(max_runs=0)
    async with in_process_gateway(
        config_for(tiny_model, max_adapters=0), sqlite_engine, fine_tuning_launcher=launcher
    ) as h:
        yield h


async def test_queued_jobs_pause_resume_cancel_and_hold_their_files(idle_gw):
    client = idle_gw.sdk()
    train = await upload(client)
    low = await client.fine_tuning.jobs.create(model="tiny-llama", training_file=train)
    high = await client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=train, extra_body={"priority": 5}
    )
    assert low.status == high.status == "queued"
    assert low.hyperparameters.n_epochs == 4  # auto: 31 examples → ceil(100 / 31)
    assert low.hyperparameters.batch_size == 1 and low.hyperparameters.learning_rate_multiplier == 1
    nxt = await idle_gw.runtime.fine_tuning.store.next_queued(set())
    assert nxt.id == high.id  # priority first, then submission

    with pytest.raises(openai.ConflictError) as in_use:
        await client.files.delete(train)
    assert in_use.value.code == "file_in_use"

    assert (await client.fine_tuning.jobs.pause(low.id)).status == "paused"
    with pytest.raises(openai.ConflictError):
        await client.fine_tuning.jobs.pause(low.id)
    assert (await client.fine_tuning.jobs.resume(low.id)).status == "queued"
    with pytest.raises(openai.ConflictError):
        await client.fine_tuning.jobs.resume(low.id)
    for job in (low, high):
        assert (await client.fine_tuning.jobs.cancel(job.id)).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        await client.fine_tuning.jobs.cancel(low.id)
    assert (await client.files.delete(train)).deleted  # no unfinished job reads it now

    page = await client.fine_tuning.jobs.list(limit=1)
    raw = page.model_dump(exclude_unset=True)
    assert violations("ListPaginatedFineTuningJobsResponse", raw) == []
    assert [j.id for j in page.data] == [high.id] and page.has_more
    rest = await client.fine_tuning.jobs.list(limit=5, after=high.id)
    assert [j.id for j in rest.data] == [low.id] and not rest.has_more
    events = await client.fine_tuning.jobs.list_events(low.id, limit=2)
    assert [e.message for e in events.data] == [
        "Fine-tuning job cancelled",
        "Fine-tuning job resumed",
    ]
    assert events.has_more


async def test_bad_requests_are_400s_naming_the_parameter(idle_gw):
    client = idle_gw.sdk()
    train = await upload(client)
    batch = await upload(client, (json.dumps(BATCH_LINE) + "\n").encode(), purpose="batch")
    cases = [
        ({"model": "no-such-model"}, "model", "model_not_available"),
        ({"model": "gpt-x"}, "model", "model_not_available"),  # not ours to train
        ({"suffix": "bad suffix!"}, "suffix", "invalid_value"),
        ({"training_file": batch}, "training_file", "invalid_file_purpose"),
        ({"training_file": "file-nope"}, "training_file", "invalid_file"),
        ({"validation_file": "file-nope"}, "validation_file", "invalid_file"),
        ({"extra_body": {"deploy": True}}, "deploy", "not_deployable"),  # max_adapters 0
    ]
    for change, param, code in cases:
        args = {"model": "tiny-llama", "training_file": train, **change}
        with pytest.raises(openai.BadRequestError) as refused:
            await client.fine_tuning.jobs.create(**args)
        assert (refused.value.param, refused.value.code) == (param, code), change
    for hyper in ({"n_epochs": 0}, {"batch_size": "big"}, {"lora_rank": 0}, {"unknown": 1}):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.fine_tuning.jobs.create(
                model="tiny-llama",
                training_file=train,
                method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
            )
        assert "hyperparameters" in (refused.value.param or ""), hyper
    with pytest.raises(openai.NotFoundError):
        await client.fine_tuning.jobs.retrieve("ftjob-nope")
    with pytest.raises(openai.NotFoundError):
        await client.fine_tuning.jobs.list_events("ftjob-nope")
    assert (await client.fine_tuning.jobs.list()).data == []
