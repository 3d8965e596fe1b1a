"""`model="auto"`: the request's kind, the policy's choice, its explanation, and the
config a policy is refused for."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from forge.config import PlatformConfig
from forge.errors import InvalidRequest
from forge.routing.auto import AutoRouter, classify
from forge.routing.router import Router
from forge.routing.stats import RouteStats
from tests.unit.harness import in_process_gateway, platform_config, usage_rows

PROVIDERS = [{"name": "p", "type": "openai_compatible", "base_url": "http://x/v1"}]
MODELS: list[dict[str, Any]] = [
    {
        "name": "small",
        "provider": "p",
        "quality": 0.3,
        "input_price_per_mtok": 0.1,
        "output_price_per_mtok": 0.2,
        "capabilities": {"vision": False},
    },
    {
        "name": "big",
        "provider": "p",
        "quality": 0.9,
        "input_price_per_mtok": 5,
        "output_price_per_mtok": 15,
    },
    {
        "name": "coder",
        "provider": "p",
        "quality": 0.6,
        "input_price_per_mtok": 1,
        "output_price_per_mtok": 2,
        "strengths": ["code"],
        "capabilities": {"tools": False},
    },
    {"name": "unrated", "provider": "p"},
]


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (user("How are you today?"), "chat"),
        (user("Why does this fail?\n```py\nx = 1/0\n```"), "code"),
        (user("def f(x):\n    return x\nclass A:\n    pass"), "code"),
        (user("I get a Traceback when I run it"), "code"),
        (user("Summarise this memo for the board: ..."), "summarise"),
        (user("Extract the names and dates as JSON: ..."), "extract"),
        (user("word " * 40_000), "long_context"),
        (user("hi", tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
        (
            {
                "model": "auto",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AA=="},
                            },
                        ],
                    }
                ],
            },
            "vision",
        ),
    ],
)
def test_requests_are_classified_by_kind(body, kind):
    assert classify(body, 8000).kind == kind


def auto_router(**auto: Any) -> AutoRouter:
    cfg = PlatformConfig.model_validate(
        {"providers": PROVIDERS, "models": MODELS, "routing": {"auto": auto} if auto else {}}
    )
    router = Router(cfg.models, {"p": object()})  # type: ignore[dict-item]
    return AutoRouter(cfg.routing.auto, router, RouteStats())


def names(route) -> list[str]:
    return [t.model.name for t in route.targets]


def test_the_default_policy_takes_the_cheapest_rated_model_and_says_why():
    auto = auto_router()
    route = auto.route("auto", user("How are you?"))
    assert names(route) == ["small", "coder", "big"]  # unrated models are not candidates
    assert route.name == "auto:default" and route.note == "auto=chat/cheapest"


def test_a_kinds_strong_models_go_first_and_capabilities_are_required():
    auto = auto_router()
    assert names(auto.route("auto", user("```js\nlet x\n```")))[0] == "coder"
    vision = {
        "model": "auto",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
                ],
            }
        ],
    }
    assert names(auto.route("auto", vision)) == ["coder", "big"]  # small sees no images
    tools = user("hi", tools=[{"type": "function", "function": {"name": "f"}}])
    assert "coder" not in names(auto.route("auto", tools))


def test_policies_set_a_floor_a_ceiling_and_a_preference():
    auto = auto_router(
        policies={
            "default": {},
            "premium": {"quality_floor": 0.5, "prefer": "best"},
            "frugal": {"cost_ceiling_usd": 0.0001},
            "picky": {"quality_floor": 0.95},
        }
    )
    assert names(auto.route("auto:premium", user("hi"))) == ["big", "coder"]
    assert names(auto.route("auto:frugal", user("hi"))) == ["small"]
    with pytest.raises(InvalidRequest) as err:
        auto.route("auto:picky", user("hi"))
    assert "no model for this chat request (quality ≥ 0.95" in err.value.message
    with pytest.raises(InvalidRequest) as err:
        auto.route("auto:nope", user("hi"))
    assert err.value.param == "model" and "premium" in err.value.message


@pytest.mark.parametrize(
    ("routing", "says"),
    [
        ({"auto": {"default_policy": "fast"}}, "default_policy 'fast' is not one of"),
        ({"auto": {"policies": {"default": {"prefer": "shiny"}}}}, "prefer"),
        ({"auto": {"policies": {"default": {"models": ["zz"]}}}}, "names unknown model 'zz'"),
        ({"auto": {"policies": {"default": {"quality_floor": 2}}}}, "quality_floor"),
    ],
)
def test_a_bad_auto_policy_is_refused_at_load(routing, says):
    with pytest.raises(ValidationError) as err:
        PlatformConfig.model_validate(
            {"providers": PROVIDERS, "models": MODELS, "routing": routing}
        )
    assert says in str(err.value)


def test_auto_is_the_platforms_own_name():
    with pytest.raises(ValidationError):
        PlatformConfig.model_validate(
            {"providers": PROVIDERS, "models": [{"name": "auto", "provider": "p"}]}
        )


async def test_auto_through_the_gateway_explains_itself(fake_openai, sqlite_engine):
    config = platform_config(fake_openai.base_url)
    models = [
        m.model_copy(update={"quality": 0.5}) if m.name in ("gpt-test", "gpt-inproc") else m
        for m in config.models
    ]
    config = config.model_copy(update={"models": models})
    async with in_process_gateway(config, sqlite_engine) as gw:
        raw = await gw.sdk().chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Summarise: the sky is blue."}]
        )
        route = raw.headers["x-forge-route"]
        assert route.startswith("auto:default; strategy=priority; auto=summarise/cheapest")
        assert raw.parse().choices[0].message.content
        rows = await usage_rows(gw)
        assert rows[-1]["route"] == route
        listed = {m.id async for m in gw.sdk().models.list()}
        assert {"auto", "auto:default"} <= listed


def test_a_models_system_prompt_wraps_the_callers_on_the_way_out():
    from forge.config import ModelConfig
    from forge.routing.prompts import adapt

    model = ModelConfig(
        name="m", provider="p", system_prompt="You are terse. {system} Answer in {{JSON}}."
    )
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
        ],
    }
    out = adapt(model, body)
    assert out["messages"][0] == {
        "role": "system",
        "content": "You are terse. Be kind.\n\nNo emoji. Answer in {JSON}.",
    }
    assert out["messages"][1:] == [{"role": "user", "content": "hi"}]
    assert body["messages"][0]["content"] == "Be kind."  # the caller's body is untouched
    assert adapt(ModelConfig(name="n", provider="p"), body) is body
    with pytest.raises(ValidationError):
        ModelConfig(name="x", provider="p", system_prompt="Use {tone}.")


async def test_each_target_gets_its_own_system_prompt(fake_openai, sqlite_engine):
    config = platform_config(fake_openai.base_url)
    models = [
        m.model_copy(update={"system_prompt": "[flaky] {system}"})
        if m.name == "flaky"
        else m.model_copy(update={"system_prompt": "[gpt-test] {system}"})
        if m.name == "gpt-test"
        else m
        for m in config.models
    ]
    config = config.model_copy(update={"models": models})
    async with in_process_gateway(config, sqlite_engine) as gw:
        before = len(fake_openai.requests)
        await gw.sdk().chat.completions.create(
            model="flaky",  # fails upstream, falls back to gpt-test
            messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
        )
        sent = [r["body"]["messages"][0]["content"] for r in fake_openai.requests[before:]]
        assert sent[0] == "[flaky] S" and sent[-1] == "[gpt-test] S"
