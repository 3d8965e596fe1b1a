"""Routing's plain parts without a gateway: the config of groups, each strategy's order,
the request's own limits, breakers (and their sharing), and the retry verdicts."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError

from forge.config import BreakerConfig, PlatformConfig, RetryConfig
from forge.errors import (
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from forge.routing.breakers import BreakerBoard, BreakerNews, Breakers, Opening
from forge.routing.limits import NO_LIMITS, RouteLimits, route_limits
from forge.routing.planner import COOLING_DOWN, Planner
from forge.routing.retries import RetryPolicy
from forge.routing.router import Router
from forge.routing.stats import RouteStats
from gateway.breaker_watch import BreakerSharing

PROVIDERS = [
    {"name": "cheap", "type": "openai_compatible", "base_url": "http://x/v1"},
    {"name": "dear", "type": "openai_compatible", "base_url": "http://y/v1"},
    {"name": "blind", "type": "openai_compatible", "base_url": "http://z/v1"},
]
MODELS = [
    {"name": "a", "provider": "cheap", "input_price_per_mtok": 0.1, "output_price_per_mtok": 0.4},
    {"name": "b", "provider": "dear", "input_price_per_mtok": 3.0, "output_price_per_mtok": 15.0},
    {
        "name": "c",
        "provider": "blind",
        "input_price_per_mtok": 1.0,
        "output_price_per_mtok": 2.0,
        "capabilities": {"vision": False},
    },
]


def config(strategy: str = "priority", **extra: Any) -> PlatformConfig:
    targets = [
        {"model": "a", "weight": 1, "priority": 2},
        {"model": "b", "weight": 3, "priority": 0},
        {"model": "c", "weight": 1, "priority": 1},
    ]
    group = {"name": "g", "strategy": strategy, "targets": targets}
    return PlatformConfig.model_validate(
        {
            "providers": PROVIDERS,
            "models": MODELS,
            "routing": {"groups": [group], **extra},
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def planner(cfg: PlatformConfig, clock: Clock | None = None, seed: int = 7) -> Planner:
    breakers = Breakers(cfg.routing.breaker, clock=clock or Clock())
    return Planner(breakers, RouteStats(), random.Random(seed))


def route(cfg: PlatformConfig, name: str = "g"):
    clients = {p.name: object() for p in cfg.providers}
    return Router(cfg.models, clients, None, cfg.routing.groups).route(name)  # type: ignore[arg-type]


BODY: dict[str, Any] = {"model": "g", "messages": [{"role": "user", "content": "hi"}]}


def order(p: Planner, cfg: PlatformConfig, body: dict[str, Any] = BODY, **kw: Any) -> list[str]:
    return [t.model.name for t in p.plan(route(cfg), body, 400, **kw).targets]


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("routing", "field"),
    [
        (
            {"groups": [{"name": "g", "strategy": "fastest", "targets": [{"model": "a"}]}]},
            "routing.groups.0.strategy",
        ),
        ({"groups": [{"name": "g", "targets": [{"model": "zz"}]}]}, "targets[0].model"),
        ({"groups": [{"name": "a", "targets": [{"model": "b"}]}]}, "routing.groups[0].name"),
        ({"groups": [{"name": "g", "targets": []}]}, "routing.groups.0.targets"),
        (
            {"groups": [{"name": "g", "targets": [{"model": "a", "weight": 0}]}]},
            "routing.groups.0.targets.0.weight",
        ),
        ({"retry": {"attempts": 0}}, "routing.retry.attempts"),
        ({"policy": "cheapest"}, "routing.policy"),
    ],
)
def test_a_bad_routing_config_is_refused_at_load_naming_the_field(routing, field):
    with pytest.raises(ValidationError) as err:
        PlatformConfig.model_validate(
            {"providers": PROVIDERS, "models": MODELS, "routing": routing}
        )
    text = str(err.value).replace("\n", " ")
    assert field in text or field.replace(".", " -> ") in text, text


def test_groups_list_as_models_and_resolve_to_their_targets():
    cfg = config()
    r = route(cfg)
    assert r.group and r.name == "g" and [t.model.name for t in r.targets] == ["a", "b", "c"]
    plain = route(cfg, "a")
    assert not plain.group and [t.model.name for t in plain.targets] == ["a"]


# ------------------------------------------------------------------ strategies


def test_priority_orders_by_priority_and_a_plain_model_keeps_its_fallback_order():
    cfg = config("priority")
    assert order(planner(cfg), cfg) == ["b", "c", "a"]


def test_weighted_shares_first_choices_by_weight():
    cfg = config("weighted")
    p = planner(cfg)
    firsts = Counter(order(p, cfg)[0] for _ in range(5000))
    assert firsts["b"] / 5000 == pytest.approx(0.6, abs=0.03)
    assert firsts["a"] / 5000 == pytest.approx(0.2, abs=0.03)
    # every target is still in the plan, as a fallback
    assert sorted(order(p, cfg)) == ["a", "b", "c"]


def test_least_busy_sends_to_the_target_with_fewest_in_flight():
    cfg = config("least_busy")
    p = planner(cfg)
    for _ in range(3):
        p.stats.started("b")
    p.stats.started("a")
    assert order(p, cfg) == ["c", "a", "b"]
    p.stats.ended("b")
    p.stats.ended("b")
    p.stats.ended("b")
    assert order(p, cfg)[-1] == "a"


def test_lowest_latency_learns_each_target_and_then_takes_the_fastest():
    cfg = config("lowest_latency")
    p = planner(cfg)
    p.stats.observe("a", 300.0, 11, first_token_ms=100.0)  # 100 + 20/token
    p.stats.observe("b", 60.0, 11, first_token_ms=50.0)  # 50 + 1/token
    assert order(p, cfg)[0] == "c"  # never seen: tried first, to learn it
    p.stats.observe("c", 1000.0, 1, first_token_ms=None)
    # a long answer (256 tokens when unsaid) favours per-token speed: a's 100 ms first
    # token then 20 ms a token loses to c's 1000 ms; a one-token answer, the reverse
    assert order(p, cfg) == ["b", "c", "a"]
    assert order(p, cfg, {**BODY, "max_tokens": 1}) == ["b", "a", "c"]


def test_lowest_cost_takes_the_cheapest_for_this_request():
    cfg = config("lowest_cost")
    assert order(planner(cfg), cfg) == ["a", "c", "b"]


def test_a_group_skips_targets_that_cannot_serve_the_request():
    cfg = config("lowest_cost")
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
    body = {**BODY, "messages": [{"role": "user", "content": [image]}]}
    assert order(planner(cfg), cfg, body) == ["a", "b"]


# ------------------------------------------------------------------ the request's limits


def test_limits_parse_from_headers_and_bad_ones_are_400_naming_the_header():
    known = {"cheap", "dear"}
    assert route_limits({}, known) is NO_LIMITS
    limits = route_limits(
        {"x-forge-max-cost": "0.01", "x-forge-prefer-providers": "dear, cheap"}, known
    )
    assert limits.max_cost_usd == 0.01 and limits.prefer == ("dear", "cheap")
    for headers, param in [
        ({"x-forge-max-cost": "free"}, "x-forge-max-cost"),
        ({"x-forge-max-latency-ms": "-5"}, "x-forge-max-latency-ms"),
        ({"x-forge-max-cost": "nan"}, "x-forge-max-cost"),
        ({"x-forge-exclude-providers": "openai"}, "x-forge-exclude-providers"),
        (
            {"x-forge-exclude-providers": "dear", "x-forge-prefer-providers": "dear"},
            "x-forge-exclude-providers",
        ),
    ]:
        with pytest.raises(InvalidRequest) as err:
            route_limits(headers, known)
        assert err.value.param == param


def test_a_cost_ceiling_keeps_the_cheap_targets_and_one_below_all_is_a_400_saying_why():
    cfg = config("priority")
    p = planner(cfg)
    assert order(p, cfg, limits=RouteLimits(max_cost_usd=0.001)) == ["c", "a"]
    with pytest.raises(InvalidRequest) as err:
        p.plan(route(cfg), BODY, 400, RouteLimits(max_cost_usd=1e-9))
    assert err.value.param == "x-forge-max-cost" and err.value.code == "route_limits_unmet"
    assert "the cheapest, 'a'" in err.value.message


def test_preferred_providers_go_first_and_excluded_ones_never():
    cfg = config("priority")
    p = planner(cfg)
    assert order(p, cfg, limits=RouteLimits(prefer=("cheap",))) == ["a", "b", "c"]
    assert order(p, cfg, limits=RouteLimits(exclude=frozenset({"dear"}))) == ["c", "a"]
    with pytest.raises(InvalidRequest):
        p.plan(route(cfg), BODY, 400, RouteLimits(exclude=frozenset({"dear", "cheap", "blind"})))


def test_a_latency_target_skips_slow_targets_and_unmeetable_ones_are_a_400():
    cfg = config("priority")
    p = planner(cfg)
    p.stats.observe("b", 5000.0, 1, first_token_ms=None)
    assert order(p, cfg, limits=RouteLimits(max_latency_ms=1000)) == ["c", "a"]
    p.stats.observe("a", 5000.0, 1, first_token_ms=None)
    p.stats.observe("c", 5000.0, 1, first_token_ms=None)
    with pytest.raises(InvalidRequest) as err:
        p.plan(route(cfg), BODY, 400, RouteLimits(max_latency_ms=1000))
    assert err.value.param == "x-forge-max-latency-ms"


# ------------------------------------------------------------------ breakers


def test_a_breaker_opens_after_consecutive_failures_and_probes_after_its_cooldown():
    clock = Clock()
    published: list[tuple[str, Opening | None]] = []
    b = Breakers(
        BreakerConfig(failures=3, cooldown_s=10, max_cooldown_s=25),
        clock=clock,
        publish=lambda k, o: published.append((k, o)),
    )
    b.failure("a", "500")
    b.success("a")  # not consecutive: the count starts again
    b.failure("a", "500")
    b.failure("a", "500")
    assert b.state("a") == "closed" and b.blocked_until("a") is None
    b.failure("a", "502 upstream_error")
    assert b.state("a") == "open" and b.blocked_until("a") == clock.now + 10
    assert "3 failures in a row" in b.reason("a")
    assert published[-1][0] == "a" and published[-1][1] is not None
    clock.now += 10
    assert b.state("a") == "half_open" and b.blocked_until("a") is None
    b.attempt("a")  # the probe
    assert b.blocked_until("a") is not None  # nobody else while it is out
    b.failure("a", "500")  # the probe failed: twice as long
    assert b.blocked_until("a") == clock.now + 20
    clock.now += 20
    b.attempt("a")
    b.failure("a", "500")
    assert b.blocked_until("a") == clock.now + 25  # capped
    clock.now += 25
    b.attempt("a")
    b.success("a")
    assert b.state("a") == "closed" and published[-1] == ("a", None)


def test_every_target_cooling_down_is_a_503_saying_which_and_until_when():
    clock = Clock()
    cfg = config("priority", breaker={"failures": 1, "cooldown_s": 30})
    p = planner(cfg, clock)
    for name in ("a", "b"):
        p.breakers.failure(name, "503 upstream_unavailable")
    assert order(p, cfg) == ["c"]
    p.breakers.cool_down("c", 12, "429 rate_limit_exceeded")
    with pytest.raises(ServiceUnavailable) as err:
        p.plan(route(cfg), BODY, 400)
    assert err.value.code == COOLING_DOWN and "'g'" in err.value.message
    assert "b: 1 failures in a row" in err.value.message


def test_targets_held_back_only_by_the_providers_429s_are_a_429():
    cfg = PlatformConfig.model_validate({"providers": PROVIDERS, "models": MODELS})
    p = planner(cfg)
    p.breakers.cool_down("a", 7, "429 rate_limit_exceeded")
    with pytest.raises(UpstreamRateLimited) as err:
        p.plan(route(cfg, "a"), {**BODY, "model": "a"}, 400)
    assert err.value.retry_after == pytest.approx(7, abs=0.5)


async def test_one_replicas_breaker_reaches_every_replica_through_the_board():
    board = BreakerBoard()
    cfg = BreakerConfig(failures=1, cooldown_s=30)
    sharing = [BreakerSharing(board) for _ in range(2)]
    replicas = [Breakers(cfg, publish=s.publish) for s in sharing]
    for s, b in zip(sharing, replicas, strict=True):
        s.breakers = b
    tasks = [asyncio.create_task(s.run()) for s in sharing]
    try:
        await asyncio.sleep(0.05)
        replicas[0].failure("a", "500")
        for _ in range(100):
            if replicas[1].state("a") == "open":
                break
            await asyncio.sleep(0.01)
        assert replicas[1].state("a") == "open" and "500" in replicas[1].reason("a")
        replicas[0].success("a")  # a probe succeeded on replica 0: closed everywhere
        for _ in range(100):
            if replicas[1].state("a") == "closed":
                break
            await asyncio.sleep(0.01)
        assert replicas[1].state("a") == "closed"
    finally:
        for t in tasks:
            t.cancel()


async def test_a_board_long_poll_answers_on_change_and_a_new_feed_at_once():
    board = BreakerBoard()
    first = await board.breakers_since(None, 0, 5)
    assert first.open == {}
    waiting = asyncio.create_task(board.breakers_since(first.feed_id, first.epoch, 5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await board.trip("b", 2e9, "down")
    news = await asyncio.wait_for(waiting, 1)
    assert news.open["b"].reason == "down" and news.epoch == first.epoch + 1


# ------------------------------------------------------------------ retries


def test_retry_verdicts_follow_the_kind_of_failure():
    policy = RetryPolicy(RetryConfig(attempts=2, base_delay_s=0.1, max_retry_after_s=2))
    v = policy.after(UpstreamError("boom"), 0)
    assert v.action == "retry" and 0 <= v.delay_s <= 0.1 and v.target_failed
    assert policy.after(UpstreamTimeout("slow"), 1).action == "next"
    assert policy.after(UpstreamRateLimited("wait", retry_after=1.5), 0).delay_s == 1.5
    long_wait = policy.after(UpstreamRateLimited("wait", retry_after=7), 0)
    assert long_wait.action == "next" and long_wait.cool_down_s == 7
    assert not long_wait.target_failed
    restarting = policy.after(ServiceUnavailable("replica gone"), 0)
    assert restarting.action == "next" and restarting.target_failed
    refused = InvalidRequest("no", code="content_policy_violation")
    assert policy.after(refused, 0).action == "next"
    assert policy.after(InvalidRequest("bad", param="messages"), 0).action == "fail"
    assert policy.after(RateLimited("your own limit"), 0).action == "fail"


def test_backoff_grows_exponentially_with_full_jitter_up_to_its_cap():
    policy = RetryPolicy(
        RetryConfig(attempts=10, base_delay_s=0.1, max_delay_s=1.0), random.Random(1)
    )
    for attempt, cap in [(0, 0.1), (1, 0.2), (2, 0.4), (5, 1.0)]:
        draws = [policy.backoff_s(attempt) for _ in range(500)]
        assert max(draws) <= cap and max(draws) > cap * 0.9 and min(draws) < cap * 0.1


def test_a_lone_target_is_tried_despite_its_failures_but_not_its_429():
    """Nothing to route around: the provider's own answer beats a 503 (a single model's
    outage ends the moment the provider is back, not a cooldown later)."""
    cfg = PlatformConfig.model_validate(
        {"providers": PROVIDERS, "models": MODELS, "routing": {"breaker": {"failures": 1}}}
    )
    p = planner(cfg)
    p.breakers.failure("a", "502 upstream_error")
    assert p.breakers.state("a") == "open"
    plan = p.plan(route(cfg, "a"), {**BODY, "model": "a"}, 400)
    assert [t.model.name for t in plan.targets] == ["a"] and plan.skipped == []
    p.breakers.cool_down("a", 60, "429 rate_limit_exceeded")
    with pytest.raises(UpstreamRateLimited):
        p.plan(route(cfg, "a"), {**BODY, "model": "a"}, 400)


def test_a_probe_that_ends_saying_nothing_frees_the_next_call_to_probe():
    clock = Clock()
    b = Breakers(BreakerConfig(failures=1, cooldown_s=5), clock=clock)
    b.failure("a", "500")
    clock.now += 5
    b.attempt("a")  # the probe: cancelled (the client left), or the caller's own 400
    assert b.blocked_until("a") is not None
    b.release("a")
    assert b.blocked_until("a") is None  # the next call probes
    b.attempt("a")
    b.cool_down("a", 60, "429 rate_limit_exceeded")  # a long 429 on the probe
    clock.now += 60
    assert b.blocked_until("a") is None  # reopened afresh, not stuck behind the probe


def test_a_429_cooldown_is_shared_as_such():
    news: list[Opening | None] = []
    b = Breakers(BreakerConfig(), publish=lambda k, o: news.append(o))
    b.cool_down("a", 30, "429 rate_limit_exceeded")
    assert news[-1] is not None and news[-1].rate_limited
    other = Breakers(BreakerConfig())
    other.apply(BreakerNews(feed_id="f", epoch=1, open={"a": news[-1]}))
    assert other.rate_limited("a")
