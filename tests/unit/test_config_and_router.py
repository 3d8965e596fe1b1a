"""Config validation, key-less optional providers, and the router's fallback chains."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from forge.config import PlatformConfig, load_config
from forge.errors import ModelNotFound
from forge.routing.router import Router

ROOT = Path(__file__).resolve().parents[2]


def config(**overrides):
    data = {
        "providers": [
            {"name": "a", "type": "openai_compatible", "base_url": "http://a/v1"},
            {"name": "b", "type": "openai", "api_key_env": "B_KEY_FOR_TEST", "optional": True},
        ],
        "models": [
            {"name": "m1", "provider": "a", "fallbacks": ["m2"]},
            {"name": "m2", "provider": "b"},
        ],
    }
    data.update(overrides)
    return PlatformConfig.model_validate(data)


def test_shipped_configs_are_valid():
    for path in (ROOT / "configs").glob("*.yaml"):
        load_config(path)


@pytest.mark.parametrize(
    "bad",
    [
        {"surprise": 1},
        {"models": [{"name": "x", "provider": "nope"}]},
        {"models": [{"name": "x", "provider": "a", "fallbacks": ["x"]}]},
        {"providers": [{"name": "z", "type": "azure", "base_url": "http://z"}]},
        {"providers": [{"name": "z", "type": "openai_compatible"}]},
        {"providers": [{"name": "z", "type": "openai", "api_key": "sk-inline"}]},
        {"server": {"port": 0}},
    ],
)
def test_invalid_configs_are_rejected(bad):
    with pytest.raises(ValidationError):
        config(**bad)


def test_optional_provider_without_key_is_dropped_with_its_models(monkeypatch):
    monkeypatch.delenv("B_KEY_FOR_TEST", raising=False)
    active = config().active()
    assert [p.name for p in active.providers] == ["a"]
    assert [m.name for m in active.models] == ["m1"]
    assert active.models[0].fallbacks == []
    monkeypatch.setenv("B_KEY_FOR_TEST", "x")
    assert len(config().active().models) == 2


def test_router_chains_and_unknown_models():
    cfg = config()
    router = Router(cfg.models, {"a": "client-a", "b": "client-b"})
    chain = router.targets("m1")
    assert [(t.model.name, t.client) for t in chain] == [("m1", "client-a"), ("m2", "client-b")]
    with pytest.raises(ModelNotFound) as err:
        router.targets("m3")
    assert err.value.param == "model" and err.value.status_code == 404


def _provider(**extra):
    from forge.config import ProviderConfig

    return ProviderConfig.model_validate(
        {"name": "m", "type": "vllm", "model_path": "/models/llama", **extra}
    )


def test_self_hosted_placement_and_autoscaling_reach_serve_options():
    from serve.app import deployment_options

    opts = deployment_options(
        _provider(
            num_gpus=1,
            num_cpus=4,
            accelerator_type="H100",
            autoscaling={"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 16},
        )
    )
    assert opts["ray_actor_options"] == {"num_cpus": 4, "num_gpus": 1, "accelerator_type": "H100"}
    assert opts["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "target_ongoing_requests": 16,
    }
    assert "num_replicas" not in opts

    fixed = deployment_options(_provider(replicas=3))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed


def test_tensor_parallel_replicas_get_a_packed_placement_group():
    from serve.app import deployment_options

    opts = deployment_options(_provider(tensor_parallel_size=4, num_cpus=2))
    assert opts["placement_group_bundles"] == [{"CPU": 2}] + [{"GPU": 1}] * 4
    assert opts["placement_group_strategy"] == "STRICT_PACK"
    assert "ray_actor_options" not in opts  # the replica takes the first bundle


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}}, "at least min_replicas"),
        ({"type": "transformers", "tensor_parallel_size": 2}, "needs the vllm engine"),
        ({"autoscaling": {"min_replicas": -1}}, "greater than or equal to 0"),
        ({"type": "transformers", "engine_args": {"num_blockz": 8}}, "unknown transformers"),
    ],
)
def test_bad_placement_settings_are_refused_at_load(extra, message):
    with pytest.raises(ValueError, match=message):
        _provider(**extra)


async def test_adapter_names_split_at_the_last_colon():
    from forge.adapters import AdapterSpec, adapter_ref

    class Server:
        def with_adapter(self, adapter):
            return ("view", adapter)

    cfg = PlatformConfig.model_validate(
        {
            "providers": [{"name": "local", "type": "transformers", "model_path": "/m"}],
            "models": [{"name": "qwen:0.5b", "provider": "local"}],
        }
    )

    async def lookup(name, org_id, project_id):
        return AdapterSpec(name=name, base_model="qwen:0.5b", source="/a") if name == "x" else None

    router = Router(cfg.models, {"local": Server()}, lookup)
    (target,) = (await router.resolve("qwen:0.5b:x")).targets
    assert target.model.name == "qwen:0.5b:x"
    assert target.client == ("view", adapter_ref(AdapterSpec(name="x", base_model="", source="/a")))
    assert (await router.resolve("qwen:0.5b")).primary.client.__class__ is Server
