"""A key restricted to some models and endpoints (set when it is made): everything else
is a 403 naming what the key may call, through the official SDK; malformed lists are
400s naming the field."""

from __future__ import annotations

import openai
import pytest

from tests.unit.harness import in_process_gateway, platform_config
from tests.unit.test_tenancy import call

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def restricted(gw, **scope) -> str:
    made = await call(gw, "POST", "/admin/keys", gw.admin_key, json={"name": "narrow", **scope})
    assert made.status_code == 201, made.text
    assert made.json()["info"].get(next(iter(scope))) == next(iter(scope.values()))
    return made.json()["key"]


async def test_a_key_limited_to_some_models_uses_those_only(gw):
    key = await restricted(gw, allowed_models=["gpt-test", "embed-test"])
    client = gw.sdk(key)
    assert (await client.chat.completions.create(model="gpt-test", messages=MSG)).choices
    assert (await client.embeddings.create(model="embed-test", input="x")).data
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.chat.completions.create(model="text-only", messages=MSG)
    error = refused.value.body
    assert error["code"] == "model_not_allowed" and error["param"] == "model"
    assert "gpt-test" in error["message"] and "text-only" in error["message"]
    assert {m.id async for m in client.models.list()} == {"gpt-test", "embed-test"}
    with pytest.raises(openai.PermissionDeniedError):
        await client.models.retrieve("text-only")
    # an unrestricted key of the same project is not affected
    assert (await gw.sdk().chat.completions.create(model="text-only", messages=MSG)).choices


async def test_a_key_limited_to_some_endpoints_calls_those_only(gw):
    key = await restricted(gw, allowed_endpoints=["/v1/responses"])
    client = gw.sdk(key)
    made = await client.responses.create(model="gpt-test", input="hi")
    assert (await client.responses.retrieve(made.id)).id == made.id  # under /v1/responses
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.chat.completions.create(model="gpt-test", messages=MSG)
    assert refused.value.body["code"] == "endpoint_not_allowed"
    assert "/v1/responses" in refused.value.body["message"]
    with pytest.raises(openai.PermissionDeniedError):
        await client.models.list()


async def test_bad_key_scopes_are_refused_naming_the_field(gw):
    for scope, param in (
        ({"allowed_models": []}, "allowed_models"),
        ({"allowed_models": [" "]}, "allowed_models"),
        ({"allowed_models": "gpt-test"}, "allowed_models"),
        ({"allowed_endpoints": ["/v1/assistants"]}, "allowed_endpoints"),
        ({"allowed_endpoints": []}, "allowed_endpoints"),
    ):
        made = await call(gw, "POST", "/admin/keys", gw.admin_key, json={"name": "x", **scope})
        assert made.status_code == 400, (scope, made.text)
        assert made.json()["error"]["param"] == param, made.text
