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
