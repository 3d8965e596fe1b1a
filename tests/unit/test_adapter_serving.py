"""LoRA adapters through the gateway, in-process: the admin route, `<base>:<adapter>` and
alias naming, the per-replica LRU, and every bad input the issue names (official SDK)."""

from __future__ import annotations

import openai
import pytest

from forge.config import PlatformConfig
from tests.unit.harness import in_process_gateway, usage_rows

pytest.importorskip("peft")

PROMPT = [{"role": "user", "content": "def handler(event):"}]


@pytest.fixture
async def gw(tiny_model, sqlite_engine):
    config = PlatformConfig.model_validate(
        {
            "providers": [
                {
                    "name": "local",
                    "type": "transformers",
                    "model_path": str(tiny_model),
                    "max_adapters": 1,
                    "max_lora_rank": 8,
                },
                {"name": "remote", "type": "openai", "base_url": "http://127.0.0.1:9/v1"},
            ],
            "models": [
                {"name": "tiny-llama", "provider": "local", "context_window": 2048},
                {"name": "tiny-twin", "provider": "local", "context_window": 2048},
                {"name": "gpt-x", "provider": "remote"},
            ],
        }
    )
    async with in_process_gateway(config, sqlite_engine) as h:
        yield h


async def register(gw, name, source, model="tiny-llama"):
    return await gw.http.post(
        "/admin/adapters",
        json={"name": name, "model": model, "source": str(source)},
        headers={"authorization": f"Bearer {gw.admin_key}"},
    )


async def answer(gw, model, **extra):
    c = await gw.sdk().chat.completions.create(
        model=model, messages=PROMPT, max_tokens=10, temperature=0, **extra
    )
    return c.choices[0].message.content


async def test_an_adapter_loads_without_restart_and_answers_by_both_names(gw, adapter_dirs):
    base = await answer(gw, "tiny-llama")
    r = await register(gw, "support", adapter_dirs["support"])
    assert r.status_code == 201, r.text
    assert r.json()["replica_adapters"] == ["support"] and r.json()["base_model"] == "tiny-llama"
    by_base = await answer(gw, "tiny-llama:support")
    assert by_base != base
    assert await answer(gw, "support") == by_base  # the alias
    stream = await gw.sdk().chat.completions.create(
        model="tiny-llama:support", messages=PROMPT, max_tokens=10, temperature=0, stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == by_base
    rows = await usage_rows(gw)
    assert {r["model"] for r in rows} >= {"tiny-llama:support", "support"}
    listed = await gw.http.get(
        "/admin/adapters", headers={"authorization": f"Bearer {gw.admin_key}"}
    )
    assert [a["name"] for a in listed.json()] == ["support"]


async def test_the_replica_lru_swaps_adapters_on_first_use(gw, adapter_dirs):
    assert (await register(gw, "support", adapter_dirs["support"])).status_code == 201
    assert (await register(gw, "legal", adapter_dirs["legal"])).status_code == 201
    server = gw.runtime.router.clients["local"]
    assert server.adapters.loaded() == ["legal"]  # capacity 1: support was evicted
    support = await answer(gw, "tiny-llama:support")  # loaded again on first use
    assert server.adapters.loaded() == ["support"]
    assert server.engine.stats().adapters == ["support"]
    assert support != await answer(gw, "legal")


async def test_bad_adapter_requests_get_clear_errors(gw, adapter_dirs):
    r = await register(gw, "wrong-shape", adapter_dirs["mismatched"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "adapter_base_mismatch"
    assert (await register(gw, "nowhere", "/no/such/dir")).status_code == 400
    r = await register(gw, "remote-lora", adapter_dirs["support"], model="gpt-x")
    assert r.status_code == 400 and "serves no adapters" in r.json()["error"]["message"]
    assert (await register(gw, "tiny-twin", adapter_dirs["support"])).status_code == 409
    assert (await register(gw, "x", adapter_dirs["support"], model="nope")).status_code == 404
    listed = await gw.http.get(
        "/admin/adapters", headers={"authorization": f"Bearer {gw.admin_key}"}
    )
    assert listed.json() == []  # nothing refused was stored
    r = await gw.http.post(
        "/admin/adapters",
        json={"name": "x", "model": "tiny-llama", "source": "/a"},
        headers={"authorization": f"Bearer {gw.user_key}"},
    )
    assert r.status_code == 403

    assert (await register(gw, "support", adapter_dirs["support"])).status_code == 201
    assert (await register(gw, "support", adapter_dirs["legal"])).status_code == 409
    with pytest.raises(openai.NotFoundError) as err:
        await answer(gw, "tiny-llama:ghost")
    assert err.value.body["code"] == "adapter_not_found"
    with pytest.raises(openai.NotFoundError) as err:
        await answer(gw, "nope:support")
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        await answer(gw, "tiny-twin:support")  # registered for tiny-llama
    assert err.value.body["code"] == "adapter_base_mismatch"
    with pytest.raises(openai.NotFoundError):
        await answer(gw, "ghost")


async def test_a_deleted_adapter_is_404(gw, adapter_dirs):
    assert (await register(gw, "support", adapter_dirs["support"])).status_code == 201
    r = await gw.http.delete(
        "/admin/adapters/support", headers={"authorization": f"Bearer {gw.admin_key}"}
    )
    assert r.status_code == 204
    with pytest.raises(openai.NotFoundError):
        await answer(gw, "tiny-llama:support")


async def test_a_name_registered_again_from_another_source_serves_the_new_weights(gw, adapter_dirs):
    assert (await register(gw, "legal", adapter_dirs["legal"])).status_code == 201
    legal = await answer(gw, "legal")
    assert (await register(gw, "support", adapter_dirs["support"])).status_code == 201
    support = await answer(gw, "support")
    assert support != legal
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    assert (await gw.http.delete("/admin/adapters/support", headers=admin)).status_code == 204
    assert (await gw.http.delete("/admin/adapters/legal", headers=admin)).status_code == 204
    assert (await register(gw, "support", adapter_dirs["legal"])).status_code == 201
    assert await answer(gw, "support") == legal


async def test_registered_adapters_are_listed_and_retrievable_as_models(gw, adapter_dirs):
    client = gw.sdk()
    assert (await register(gw, "support", adapter_dirs["support"])).status_code == 201
    cards = {m.id: m async for m in client.models.list()}
    assert {"tiny-llama", "tiny-twin", "gpt-x", "support"} <= set(cards)
    assert cards["support"].owned_by == "local" and cards["support"].created > 1_700_000_000
    assert (await client.models.retrieve("support")).id == "support"
    assert (await client.models.retrieve("tiny-llama:support")).id == "tiny-llama:support"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("tiny-llama:ghost")
    await gw.http.delete(
        "/admin/adapters/support", headers={"authorization": f"Bearer {gw.admin_key}"}
    )
    assert "support" not in {m.id async for m in client.models.list()}


async def test_an_adapter_deleted_and_registered_again_from_rewritten_files_serves_them(
    gw, adapter_dirs, tmp_path
):
    """The same source path, its files replaced (a retrained adapter), registered again
    after a delete: the new registration is a new version, and its weights are served."""
    import shutil

    legal = await answer_with(gw, "legal", adapter_dirs["legal"])
    source = tmp_path / "retrained"
    shutil.copytree(adapter_dirs["support"], source)
    support = await answer_with(gw, "support", source)
    admin = {"authorization": f"Bearer {gw.admin_key}"}
    assert (await gw.http.delete("/admin/adapters/support", headers=admin)).status_code == 204
    shutil.rmtree(source)
    shutil.copytree(adapter_dirs["legal"], source)
    assert await answer_with(gw, "support", source) == legal != support


async def answer_with(gw, name, source):
    assert (await register(gw, name, source)).status_code == 201
    return await answer(gw, name)


async def _org(gw, name: str) -> tuple[str, str, str, str]:
    """A new organisation: (its admin key, a project, that project's key, a key of its
    default project)."""
    made = await gw.http.post(
        "/admin/organizations",
        json={"name": name, "plan": "enterprise"},
        headers={"authorization": f"Bearer {gw.operator_key}"},
    )
    assert made.status_code == 201, made.text
    admin = made.json()["admin_key"]
    headers = {"authorization": f"Bearer {admin}"}
    project = (
        await gw.http.post("/v1/organization/projects", json={"name": "p"}, headers=headers)
    ).json()["id"]
    keys = []
    for path in (f"/v1/organization/projects/{project}", None):
        if path is None:
            made_key = await gw.http.post("/admin/keys", json={"name": "k"}, headers=headers)
            keys.append(made_key.json()["key"])
            continue
        account = await gw.http.post(
            f"{path}/service_accounts", json={"name": "svc"}, headers=headers
        )
        keys.append(account.json()["api_key"]["value"])
    return admin, project, keys[0], keys[1]


async def ask(gw, key: str, model: str) -> str:
    c = await gw.sdk(key).chat.completions.create(
        model=model, messages=PROMPT, max_tokens=10, temperature=0
    )
    return c.choices[0].message.content


async def test_adapters_belong_to_their_organisation_and_project(gw, adapter_dirs):
    """An organisation's adapter answers its own keys only; another organisation gets
    404 for it everywhere and may register the same name with its own weights; a
    project's adapter is that project's; the operator's is every organisation's, and an
    organisation's own adapter of the same name shadows it."""
    a_admin, a_project, a_key, a_default = await _org(gw, "adapters-a")
    b_admin, _, b_key, _ = await _org(gw, "adapters-b")
    made = await gw.http.post(
        "/admin/adapters",
        json={"name": "support", "model": "tiny-llama", "source": str(adapter_dirs["support"])},
        headers={"authorization": f"Bearer {a_admin}"},
    )
    assert made.status_code == 201, made.text
    assert made.json()["org_id"] and made.json()["alias"] == "support"
    a_support = await ask(gw, a_key, "support")
    assert await ask(gw, a_default, "tiny-llama:support") == a_support
    for model in ("support", "tiny-llama:support"):
        with pytest.raises(openai.NotFoundError):
            await ask(gw, b_key, model)
        with pytest.raises(openai.NotFoundError):
            await gw.sdk(b_key).models.retrieve(model)
    assert "support" not in {m.id async for m in gw.sdk(b_key).models.list()}
    assert "support" in {m.id async for m in gw.sdk(a_key).models.list()}
    b_headers = {"authorization": f"Bearer {b_admin}"}
    assert (await gw.http.get("/admin/adapters", headers=b_headers)).json() == []
    refused = await gw.http.delete("/admin/adapters/support", headers=b_headers)
    assert refused.status_code == 404 and "support" in refused.text
    assert await ask(gw, a_key, "support") == a_support  # untouched

    legal = {"name": "support", "model": "tiny-llama", "source": str(adapter_dirs["legal"])}
    made_b = await gw.http.post("/admin/adapters", json=legal, headers=b_headers)
    assert made_b.status_code == 201, made_b.text  # the name is B's too, with B's weights
    assert made_b.json()["name"] != made.json()["name"]  # two registrations, two keys
    b_support = await ask(gw, b_key, "support")
    assert b_support != a_support and await ask(gw, a_key, "support") == a_support

    # a project's own adapter: its project's keys only
    only = {
        "name": "project-only",
        "model": "tiny-llama",
        "source": str(adapter_dirs["legal"]),
        "project_id": a_project,
    }
    a_headers = {"authorization": f"Bearer {a_admin}"}
    assert (await gw.http.post("/admin/adapters", json=only, headers=a_headers)).status_code == 201
    assert await ask(gw, a_key, "project-only") == b_support  # the legal weights
    with pytest.raises(openai.NotFoundError):
        await ask(gw, a_default, "project-only")
    foreign = {**only, "name": "elsewhere", "project_id": "proj_of_nobody"}
    assert (
        await gw.http.post("/admin/adapters", json=foreign, headers=b_headers)
    ).status_code == 404

    # the platform's adapter: everyone's, shadowed by an organisation's own
    operator = {"authorization": f"Bearer {gw.operator_key}"}
    shared = {"name": "shared", "model": "tiny-llama", "source": str(adapter_dirs["legal"])}
    assert (await gw.http.post("/admin/adapters", json=shared, headers=operator)).status_code == 201
    assert await ask(gw, a_key, "shared") == await ask(gw, b_key, "shared") == b_support
    mine = {**shared, "source": str(adapter_dirs["support"])}
    assert (await gw.http.post("/admin/adapters", json=mine, headers=a_headers)).status_code == 201
    assert await ask(gw, a_key, "shared") == a_support  # A's own shadows the platform's
    assert await ask(gw, b_key, "shared") == b_support
    assert (await gw.http.delete("/admin/adapters/shared", headers=a_headers)).status_code == 204
    assert await ask(gw, a_key, "shared") == b_support  # the platform's again
    everyone = await gw.http.get("/admin/adapters", headers=operator)
    assert len([a for a in everyone.json() if a["alias"] == "support"]) == 2
