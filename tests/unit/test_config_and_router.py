"""Config validation, key-less optional providers, and the router's fallback chains."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from forge.config import PlatformConfig, load_config
from forge.errors import ModelNotFound
from serve.router import Router

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
