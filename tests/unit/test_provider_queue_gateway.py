"""Provider rate limits through the gateway, with the official SDK: the configured RPM
holds back what the account cannot take (a 429 ``provider_rate_limited`` with
Retry-After, no call sent), the provider's own ``x-ratelimit-*`` headers and 429s do the
same, and /metrics shows each replica's queue depth."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from forge.config import PlatformConfig, ProviderRateLimits
from gateway.metrics import _replica_gauges
from tests.fakes.openai_upstream import FakeOpenAI
from tests.unit.harness import in_process_gateway, platform_config, usage_rows

MSG = [{"role": "user", "content": "hello"}]


def _limited(base_url: str, **limits: float) -> PlatformConfig:
    config = platform_config(base_url)
    providers = [
        p.model_copy(update={"rate_limits": ProviderRateLimits(**limits)})
        if p.name == "fake-inproc"
        else p
        for p in config.providers
    ]
    return config.model_copy(update={"providers": providers})


@pytest.fixture(scope="module")
def counting_openai() -> Iterator[FakeOpenAI]:
    """Sends OpenAI's rate-limit headers: 2 requests a minute."""
    server = FakeOpenAI(api_key="sk-upstream-test", rate_limits=(2, 1_000_000)).start()
    yield server
    server.stop()


async def test_the_configured_rpm_refuses_what_it_cannot_send_in_time(fake_openai, sqlite_engine):
    config = _limited(fake_openai.base_url, rpm=1, max_wait_s=1)
    async with in_process_gateway(config, sqlite_engine) as gw:
        client = gw.sdk()
        await client.chat.completions.create(model="gpt-inproc", messages=MSG)
        sent = len(fake_openai.requests)
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model="gpt-inproc", messages=MSG)
        rows = await usage_rows(gw)
    error = raised.value
    assert error.code == "provider_rate_limited" and "fake-inproc" in error.message
    assert 1 <= float(error.response.headers["retry-after"]) <= 61
    assert len(fake_openai.requests) == sent  # nothing sent that the account would refuse
    assert [r["status"] for r in rows] == ["ok", "error"]


async def test_a_request_waits_for_its_turn_within_the_bound(fake_openai, sqlite_engine):
    config = _limited(fake_openai.base_url, rpm=600, max_wait_s=5)  # one each 0.1 s
    async with in_process_gateway(config, sqlite_engine) as gw:
        client = gw.sdk()
        answers = [
            await client.chat.completions.create(model="gpt-inproc", messages=MSG) for _ in range(3)
        ]
        queue = gw.runtime.relay.queues.get("fake-inproc")
    assert all(a.choices[0].message.content for a in answers)
    assert queue.depth == 0


async def test_the_providers_headers_hold_the_queue(counting_openai, sqlite_engine):
    async with in_process_gateway(platform_config(counting_openai.base_url), sqlite_engine) as gw:
        client = gw.sdk()
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-inproc", messages=MSG
        )
        assert raw.http_response.status_code == 200
        await client.chat.completions.create(model="gpt-inproc", messages=MSG)  # the last one
        sent = len(counting_openai.requests)
        with pytest.raises(openai.RateLimitError) as raised:
            await client.chat.completions.create(model="gpt-inproc", messages=MSG)
    assert raised.value.code == "provider_rate_limited"
    assert len(counting_openai.requests) == sent  # the provider said none were left


async def test_the_providers_429_holds_the_next_request(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as gw:
        relay = gw.runtime.relay
        with pytest.raises(openai.RateLimitError):  # the fake's 429 says retry after 7 s
            await gw.sdk().chat.completions.create(model="error-429", messages=MSG)
        queue = relay.queues.get("fake")
        with pytest.raises(Exception) as held:
            await queue.acquire(10, deadline=0.0)
    assert getattr(held.value, "code", None) == "provider_rate_limited"


async def test_the_metrics_show_queue_depths():
    registry = CollectorRegistry()
    _replica_gauges(
        registry,
        {"gw-1": {"gateway": True, "provider_queues": {"openai": 3}, "usage": {"pending": 0}}},
    )
    text = generate_latest(registry).decode()
    assert 'forge_provider_queue_depth{provider="openai",replica="gw-1"} 3.0' in text
