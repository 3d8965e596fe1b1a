"""Learning from use, end to end in-process with the official SDK: a project opts a tuned
model in, calls it by its stable name, rates the answers (with corrections); enough
well-rated examples start the next version, trained on the old data and them, and the
side-by-side comparison decides which version the stable name serves."""

from __future__ import annotations

import json

import openai
import pytest

from forge.finetune.learning import judge_candidate, lineage_alias, stable_name
from tests.unit.harness import in_process_gateway
from tests.unit.test_fine_tuning_api import (
    TRAINING,
    TUNING,
    VALIDATION,
    config_for,
    upload,
    wait_for,
)
from tests.unit.test_train_loop import ANSWER, QUESTION, SYSTEM
from train.local_launcher import LocalLauncher

pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


def test_the_stable_name_of_a_version_and_of_what_a_request_names():
    assert stable_name("ft:tiny:acme:codeword:0a1b2c3d") == "ft:tiny:acme:codeword"
    assert lineage_alias("ft:tiny:acme:codeword:0a1b2c3d") == "ft:tiny:acme:codeword"
    assert lineage_alias("ft:tiny:acme:codeword") == "ft:tiny:acme:codeword"
    assert lineage_alias("gpt-4o") is None and lineage_alias("ft:x") is None


def test_a_candidate_replaces_the_current_version_only_if_it_does_as_well():
    def m(matches: int, loss: float) -> dict:
        return {"evaluation": {"tuned_matches": matches}, "valid_loss": loss}

    assert judge_candidate(m(2, 1.0), m(3, 2.0)).replace  # more right answers wins
    assert not judge_candidate(m(3, 2.0), m(2, 0.5)).replace
    assert judge_candidate(m(2, 1.0), m(2, 1.04)).replace  # a tie, within the tolerance
    kept = judge_candidate(m(2, 1.0), m(2, 1.2))
    assert not kept.replace and "1.2000 vs 1.0000" in kept.reason


@pytest.fixture
async def gw(tiny_model, sqlite_engine):
    async with in_process_gateway(
        config_for(tiny_model, max_adapters=3), sqlite_engine, fine_tuning_launcher=LocalLauncher()
    ) as h:
        yield h


async def ask(client, model: str) -> tuple[str, str]:
    """The answer and the request's id (what feedback names)."""
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[SYSTEM, QUESTION], max_tokens=24, temperature=0
    )
    return raw.parse().choices[0].message.content or "", raw.headers["x-request-id"]


async def ask_streamed(client, model: str) -> tuple[str, str]:
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[SYSTEM, QUESTION], max_tokens=24, temperature=0, stream=True
    )
    parts = [c.choices[0].delta.content or "" async for c in raw.parse() if c.choices]
    return "".join(parts), raw.headers["x-request-id"]


async def rate(client, request_id: str, score: float, correction: str | None = None) -> dict:
    body = {"request_id": request_id, "score": score}
    if correction is not None:
        body["correction"] = correction
    return await client.post("/feedback", body=body, cast_to=object)


async def test_rated_answers_train_the_next_version_which_replaces_the_current_if_better(gw):
    client = gw.sdk()
    train, valid = await upload(client), await upload(client, VALIDATION)
    job = await client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=train,
        validation_file=valid,
        suffix="codeword",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": TUNING}},
        extra_body={"deploy": True},
    )
    first = (await wait_for(client, job.id, "succeeded", "failed")).fine_tuned_model
    path = f"/fine_tuning/models/{first}/learning"
    with pytest.raises(openai.BadRequestError):
        await client.get(path, cast_to=object)  # not opted in yet
    with pytest.raises(openai.BadRequestError):
        await client.post(path, body={"retrain_every": 0}, cast_to=object)
    policy = await client.post(path, body={"retrain_every": 3, "min_score": 0.5}, cast_to=object)
    alias = policy["model"]
    assert alias == stable_name(first) and policy["current"] == first
    assert (policy["examples"], policy["rated"], policy["candidate_job"]) == (0, 0, None)

    # the stable name answers as the current version; a base model's answers are not kept
    answer, base_request = await ask(client, "tiny-llama")
    assert not (await rate(client, base_request, 1.0))["learning"]
    corrected = "The code word is MANGO. Always."
    rated = []
    for score in (1.0, 0.2, 0.9):
        answer, request_id = await ask(client, alias)
        assert ANSWER in answer
        rated.append((await rate(client, request_id, score, corrected))["learning"])
    assert rated == [True, True, True]
    status = await client.get(path, cast_to=object)
    assert (status["examples"], status["rated"]) == (3, 2) and status["candidate_job"] is None
    with pytest.raises(openai.ConflictError):  # it serves the stable name
        await client.delete(f"/fine_tuning/models/{first}", cast_to=object)

    # the third well-rated example starts the next version, with the old data and them
    # its versions' names count as well, and streamed answers
    streamed, request_id = await ask_streamed(client, first)
    assert (await rate(client, request_id, 0.7))["learning"]
    status = await client.get(path, cast_to=object)
    candidate_job = status["candidate_job"]
    assert candidate_job and (status["examples"], status["rated"]) == (1, 0)
    candidate = await wait_for(client, candidate_job, "succeeded", "failed")
    assert candidate.status == "succeeded", candidate.error
    assert candidate.validation_file == valid and candidate.seed == 7
    assert candidate.metadata == {"learning_from": first, "examples": "3"}
    data = (await client.files.content(candidate.training_file)).text.splitlines()
    assert data[:31] == TRAINING.decode().splitlines()
    taught = [json.loads(line)["messages"][-1]["content"] for line in data[31:]]
    assert len(taught) == 3 and taught[:2] == [corrected, corrected]
    assert taught[2] == streamed  # no correction: the answer it gave, rated well

    # the comparison decides, by the rule, on the same validation set
    versions = {
        v["id"]: v["metrics"]
        for v in (await client.get("/fine_tuning/models", cast_to=object))["data"]
    }
    second = candidate.fine_tuned_model
    verdict = judge_candidate(versions[first], versions[second])
    events = [
        e.message async for e in client.fine_tuning.jobs.list_events(candidate_job, limit=100)
    ]
    decided = next(m for m in events if alias in m and ("replaced" in m or "stays" in m))
    assert ("replaced" in decided) == verdict.replace and verdict.reason in decided
    status = await client.get(path, cast_to=object)
    assert status["current"] == (second if verdict.replace else first)
    assert status["candidate_job"] is None
    compare = await client.files.content(candidate.result_files[-1])
    rows = [json.loads(x) for x in compare.text.splitlines()]
    assert len(rows) == 2 and {"expected", "current", "candidate"} <= rows[0].keys()
    answer, _ = await ask(client, alias)
    assert ANSWER in answer
