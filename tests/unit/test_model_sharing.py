"""Sharing a fine-tuned model: with its organisation's other projects, and through the
gallery with other organisations, who browse it, rate it and deploy a copy of their own
with one call (in-process, official SDK, the in-process launcher)."""

from __future__ import annotations

import openai
import pytest

from tests.unit.harness import in_process_gateway
from tests.unit.test_fine_tuning_api import TUNING, config_for, say, upload, wait_for
from tests.unit.test_train_loop import ANSWER
from train.local_launcher import LocalLauncher

pytest.importorskip("peft")
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


@pytest.fixture
async def gw(tiny_model, sqlite_engine):
    async with in_process_gateway(
        config_for(tiny_model, max_adapters=2), sqlite_engine, fine_tuning_launcher=LocalLauncher()
    ) as h:
        yield h


async def trained(client) -> str:
    job = await client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=await upload(client),
        suffix="codeword",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": TUNING}},
        extra_body={"deploy": True},
    )
    done = await wait_for(client, job.id, "succeeded", "failed")
    assert done.status == "succeeded", done.error
    return done.fine_tuned_model


async def test_a_model_shared_with_the_organisation_answers_its_other_projects(gw):
    owner = gw.sdk()
    name = await trained(owner)
    project = await gw.runtime.tenancy.create_project("org-default", "colleagues")
    colleague = gw.sdk((await gw.keys.create_key("c", project_id=project.id)).key)
    with pytest.raises(openai.NotFoundError):
        await say(colleague, name)

    share = f"/fine_tuning/models/{name}/share"
    shared = await owner.post(share, body={"scope": "organization"}, cast_to=object)
    assert shared["sharing"] == "organization" and shared["deployed"]
    assert ANSWER in await say(colleague, name)  # registered again, for the organisation
    assert name in [m.id async for m in colleague.models.list()]
    listed = (await colleague.get("/fine_tuning/models", cast_to=object))["data"]
    assert [(v["id"], v["sharing"]) for v in listed] == [(name, "organization")]
    with pytest.raises(openai.NotFoundError):  # only its own project manages it
        await colleague.post(f"/fine_tuning/models/{name}/undeploy", cast_to=object)

    await owner.post(share, body={"scope": "project"}, cast_to=object)
    with pytest.raises(openai.NotFoundError):
        await say(colleague, name)
    assert ANSWER in await say(owner, name)
    assert (await colleague.get("/fine_tuning/models", cast_to=object))["data"] == []


async def test_the_gallery_publishes_rates_and_deploys_a_copy_into_another_organisation(gw):
    owner, admin = gw.sdk(), gw.sdk(gw.admin_key)
    name = await trained(owner)
    share = f"/fine_tuning/models/{name}/share"
    with pytest.raises(openai.PermissionDeniedError):  # publishing takes an admin key
        await owner.post(share, body={"scope": "public"}, cast_to=object)
    with pytest.raises(openai.BadRequestError):
        await admin.post(share, body={"scope": "everyone"}, cast_to=object)
    published = await admin.post(
        share, body={"scope": "public", "description": "Knows the code word."}, cast_to=object
    )
    assert published["sharing"] == "public" and published["published_at"]

    _, other_key = await gw.runtime.tenancy.create_org("Acme", "professional")
    other = gw.sdk(other_key)
    with pytest.raises(openai.NotFoundError):  # another organisation's: not callable as is
        await say(other, name)
    listing = (await other.get("/gallery/models", cast_to=object))["data"]
    assert [m["id"] for m in listing] == [name]
    entry = listing[0]
    assert entry["owned_by"] and entry["description"] == "Knows the code word."
    assert entry["base_model"] == "tiny-llama" and entry["hyperparameters"]["lora_rank"] == 8
    assert entry["rating"] is None and entry["installs"] == 0
    assert "trained_tokens" in entry["metrics"]
    empty = await other.get(
        "/gallery/models", cast_to=object, options={"params": {"base_model": "x"}}
    )
    assert empty["data"] == []

    # ratings: one per organisation, not of one's own, 1 to 5
    path = f"/gallery/models/{name}"
    rated = await other.post(
        path + "/ratings", body={"score": 4, "comment": "good"}, cast_to=object
    )
    assert (rated["rating"], rated["ratings"]) == (4.0, 1)
    rated = await other.post(path + "/ratings", body={"score": 5}, cast_to=object)
    assert (rated["rating"], rated["ratings"]) == (5.0, 1)
    with pytest.raises(openai.PermissionDeniedError):
        await owner.post(path + "/ratings", body={"score": 5}, cast_to=object)
    with pytest.raises(openai.BadRequestError):
        await other.post(path + "/ratings", body={"score": 6}, cast_to=object)
    comments = (await other.get(path + "/ratings", cast_to=object))["data"]
    assert [(r["score"], r["comment"]) for r in comments] == [(5, None)]

    # deploy with one call: a copy of its own, which answers as taught
    installed = await other.post(path + "/deploy", cast_to=object)
    assert installed["id"] == name and installed["gallery_model"] == name
    assert ANSWER in await say(other, name)
    assert name in [m.id async for m in other.models.list()]
    assert (await other.post(path + "/deploy", cast_to=object))["id"] == name  # idempotent
    assert (await other.get(path, cast_to=object))["installs"] == 1

    # the publisher deletes its model: it leaves the gallery, the copy keeps answering
    await owner.delete(f"/fine_tuning/models/{name}", cast_to=object)
    with pytest.raises(openai.NotFoundError):
        await other.get(path, cast_to=object)
    assert ANSWER in await say(other, name)
    with pytest.raises(openai.NotFoundError):
        await other.post(path + "/deploy", cast_to=object)
    assert (await other.post(path + "/undeploy", cast_to=object))["deleted"]
    with pytest.raises(openai.NotFoundError):
        await say(other, name)
    with pytest.raises(openai.NotFoundError):
        await other.post(path + "/undeploy", cast_to=object)
