"""Fault injection through the whole gateway (in-process, real providers, the fake
OpenAI upstream): retries, fallbacks and breakers keep answering while a target fails."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from forge.config import PlatformConfig
from tests.unit.harness import in_process_gateway, usage_rows


def routing_config(base_url: str, **routing: Any) -> PlatformConfig:
    provider = {
        "type": "openai_compatible",
        "base_url": base_url,
        "api_key_env": "FAKE_UPSTREAM_KEY",
        "placement": "gateway",
    }
    return PlatformConfig.model_validate(
        {
            "providers": [
                {**provider, "name": "primary", "timeout_s": 0.5},
                {**provider, "name": "backup"},
            ],
            "models": [
                {
                    "name": "flaky",
                    "provider": "primary",
                    "model": "flaky-30",
                    "fallbacks": ["steady"],
                },
                {
                    "name": "fragile",
                    "provider": "primary",
                    "model": "fragile-model",
                    "fallbacks": ["steady"],
                },
                {"name": "steady", "provider": "backup", "model": "gpt-fake"},
                {
                    "name": "dear",
                    "provider": "backup",
                    "model": "gpt-fake",
                    "input_price_per_mtok": 30,
                    "output_price_per_mtok": 60,
                },
            ],
            "routing": {
                "retry": {"attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.05},
                **routing,
            },
        }
    )


async def _ask(client: openai.AsyncOpenAI, model: str, stream: bool) -> tuple[str, Any]:
    messages = [{"role": "user", "content": "hi"}]
    if stream:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=messages, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
        return text, raw.headers
    raw = await client.chat.completions.with_raw_response.create(model=model, messages=messages)
    return raw.parse().choices[0].message.content or "", raw.headers


async def test_a_primary_failing_30_percent_of_requests_fails_none(fake_openai, sqlite_engine):
    """500s, 429s, timeouts and resets on 30% of the primary's requests; with retries
    and a fallback every request is answered, streams included (they fall back only
    before their first token, which is all these failures ever reach)."""
    config = routing_config(fake_openai.base_url, breaker={"failures": 1000})
    async with in_process_gateway(config, sqlite_engine) as gw:
        client = gw.sdk()
        results = await asyncio.gather(
            *(_ask(client, "flaky", stream=i % 2 == 1) for i in range(40)),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == []
        assert all(text for text, _ in results)  # type: ignore[misc]
        routes = [headers["x-forge-route"] for _, headers in results]  # type: ignore[misc]
        assert any("target=steady" in r and "failed=flaky" in r for r in routes)
        assert any("target=flaky" in r for r in routes)
        rows = await usage_rows(gw)
        assert len(rows) == 40 and {r["status"] for r in rows} == {"ok"}


async def test_a_dead_primarys_breaker_opens_and_its_traffic_moves_on_without_trying_it(
    fake_openai, sqlite_engine
):
    config = routing_config(
        fake_openai.base_url, breaker={"failures": 3, "cooldown_s": 0.3, "max_cooldown_s": 1}
    )
    calls = lambda: sum(r["body"]["model"] == "fragile-model" for r in fake_openai.requests)  # noqa: E731
    fake_openai.down.add("fragile-model")
    try:
        async with in_process_gateway(config, sqlite_engine) as gw:
            now = [time.time()]  # the breakers' clock, moved by the test (not by a slow machine)
            gw.runtime.breakers._clock = lambda: now[0]
            client = gw.sdk()
            before = calls()
            for _ in range(10):
                text, headers = await _ask(client, "fragile", stream=False)
                assert text and "target=steady" in headers["x-forge-route"]
            # two requests of two tries each opened it; the other eight never tried it
            assert calls() - before <= 4
            assert gw.runtime.breakers.state("fragile") == "open"
            assert "skipped=fragile(cooling down)" in headers["x-forge-route"]
            # back up: after the cooldown one probe closes the breaker, traffic returns
            fake_openai.down.discard("fragile-model")
            now[0] += 0.35
            text, headers = await _ask(client, "fragile", stream=True)
            assert "target=fragile" in headers["x-forge-route"]
            assert gw.runtime.breakers.state("fragile") == "closed"
    finally:
        fake_openai.down.discard("fragile-model")


async def test_with_every_target_cooling_down_the_answer_is_a_503_saying_why(
    fake_openai, sqlite_engine
):
    config = routing_config(
        fake_openai.base_url,
        breaker={"failures": 1, "cooldown_s": 30},
        groups=[{"name": "both", "targets": [{"model": "fragile"}, {"model": "steady"}]}],
    )
    fake_openai.down.update({"fragile-model", "gpt-fake"})
    try:
        async with in_process_gateway(config, sqlite_engine) as gw:
            client = gw.sdk()
            with pytest.raises(openai.APIStatusError):
                await _ask(client, "both", stream=False)  # opens both breakers
            with pytest.raises(openai.InternalServerError) as err:
                await _ask(client, "both", stream=True)
            assert err.value.status_code == 503
            body = err.value.body
            assert isinstance(body, dict) and body["code"] == "targets_cooling_down"
            assert "fragile" in body["message"] and "steady" in body["message"]
            assert err.value.response.headers["retry-after"]
    finally:
        fake_openai.down.difference_update({"fragile-model", "gpt-fake"})


async def test_a_request_sets_its_own_routing_limits_in_headers(fake_openai, sqlite_engine):
    config = routing_config(
        fake_openai.base_url,
        groups=[
            {
                "name": "any",
                "strategy": "lowest_cost",
                "targets": [{"model": "dear"}, {"model": "steady"}],
            }
        ],
    )
    async with in_process_gateway(config, sqlite_engine) as gw:
        client = gw.sdk()
        _, headers = await _ask(client, "any", stream=False)
        assert "strategy=lowest_cost; target=steady" in headers["x-forge-route"]
        prefer = client.with_options(default_headers={"x-forge-prefer-providers": "backup"})
        _, headers = await _ask(prefer, "flaky", stream=False)
        assert "target=steady" in headers["x-forge-route"]
        broke = client.with_options(default_headers={"x-forge-max-cost": "0.0000000001"})
        with pytest.raises(openai.BadRequestError) as err:
            await _ask(broke, "dear", stream=False)
        assert err.value.body["param"] == "x-forge-max-cost"  # type: ignore[index]
        assert "the cheapest, 'dear'" in err.value.body["message"]  # type: ignore[index]
        unknown = client.with_options(default_headers={"x-forge-exclude-providers": "nope"})
        with pytest.raises(openai.BadRequestError):
            await _ask(unknown, "any", stream=False)
        models = {m.id async for m in client.models.list()}
        assert "any" in models
