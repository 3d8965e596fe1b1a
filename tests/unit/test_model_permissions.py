"""A project's model permissions (OpenAI's ``/projects/{id}/model_permissions``): kept,
checked against OpenAI's schemas, enforced on every request of the project's keys (403,
as OpenAI answers) and in ``/v1/models``, and followed at once by a key already cached."""

from __future__ import annotations

import openai
import pytest

from forge.config import ModelGroup
from tests.unit.harness import in_process_gateway, platform_config
from tests.unit.test_tenancy import call, conforms, populated


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def ask(gw, key: str, model: str) -> int:
    reply = await gw.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    return reply.status_code


async def test_an_allow_list_and_a_deny_list_govern_the_projects_keys_at_once(gw):
    org = await populated(gw, "models")
    path = f"/v1/organization/projects/{org.project}/model_permissions"
    unset = conforms("ProjectModelPermissions", await call(gw, "GET", path, org.admin))
    assert unset == {"object": "project.model_permissions", "mode": "deny_list", "model_ids": []}
    assert await ask(gw, org.user, "text-only") == 200

    body = {"mode": "allow_list", "model_ids": ["gpt-test", "gpt-test"]}
    allowed = conforms(
        "ProjectModelPermissions", await call(gw, "POST", path, org.admin, json=body)
    )
    assert allowed["model_ids"] == ["gpt-test"]
    assert await ask(gw, org.user, "gpt-test") == 200
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await gw.sdk(org.user).chat.completions.create(
            model="text-only", messages=[{"role": "user", "content": "hi"}]
        )
    error = refused.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model", error
    assert org.project in error["message"] and "text-only" in error["message"]
    listed = await gw.sdk(org.user).models.list()
    assert [m.id for m in listed.data] == ["gpt-test"]
    assert (await call(gw, "GET", "/v1/models/text-only", org.user)).status_code == 403

    denied = {"mode": "deny_list", "model_ids": ["gpt-test"]}
    await call(gw, "POST", path, org.admin, json=denied)
    assert await ask(gw, org.user, "gpt-test") == 403
    assert await ask(gw, org.user, "text-only") == 200
    other_project_key = gw.admin_key  # the default organisation's: not under this policy
    assert await ask(gw, other_project_key, "gpt-test") == 200

    gone = await call(gw, "DELETE", path, org.admin)
    conforms("ProjectModelPermissionsDeleteResponse", gone)
    assert await ask(gw, org.user, "gpt-test") == 200


async def test_bad_model_permissions_are_refused(gw):
    org = await populated(gw, "bad-models")
    path = f"/v1/organization/projects/{org.project}/model_permissions"
    for body, param in (
        ({"mode": "everything", "model_ids": []}, "mode"),
        ({"mode": "allow_list", "model_ids": [" "]}, "model_ids"),
        ({"mode": "allow_list"}, "model_ids"),
    ):
        resp = await call(gw, "POST", path, org.admin, json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param, resp.text
    await call(gw, "POST", f"/v1/organization/projects/{org.project}/archive", org.admin)
    archived = await call(gw, "POST", path, org.admin, json={"mode": "allow_list", "model_ids": []})
    assert archived.status_code == 400
    missing = await call(
        gw, "GET", "/v1/organization/projects/proj_nowhere/model_permissions", org.admin
    )
    assert missing.status_code == 404


async def test_a_denied_model_stays_denied_inside_a_group_and_behind_a_fallback(
    fake_openai, sqlite_engine
):
    config = platform_config(fake_openai.base_url)
    group = ModelGroup(name="both", targets=[{"model": "gpt-test"}, {"model": "text-only"}])  # type: ignore[list-item]
    routing = config.routing.model_copy(update={"groups": [group]})
    config = config.model_copy(update={"routing": routing})
    async with in_process_gateway(config, sqlite_engine) as gw:
        org = await populated(gw, "groups-deny")
        path = f"/v1/organization/projects/{org.project}/model_permissions"
        await call(
            gw, "POST", path, org.admin, json={"mode": "deny_list", "model_ids": ["gpt-test"]}
        )
        for _ in range(3):
            raw = await gw.sdk(org.user).chat.completions.with_raw_response.create(
                model="both", messages=[{"role": "user", "content": "hi"}]
            )
            assert "target=text-only" in raw.headers["x-forge-route"]
            assert "gpt-test" not in raw.headers["x-forge-route"]
        both = {"mode": "deny_list", "model_ids": ["gpt-test", "text-only"]}
        await call(gw, "POST", path, org.admin, json=both)
        assert await ask(gw, org.user, "both") == 403
