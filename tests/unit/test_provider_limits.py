"""Provider rate limits (forge.routing.provider_limits): the providers' rate-limit headers
parsed, the per-account queue (priority order, bounded wait, cancellation, configured
RPM/TPM, the upstream's remaining and 429s), and the providers reporting the limits.

Queue tests run on a fake clock: time moves only when a test says so, and ``wake``
stands for the timer that would fire then; one test lets the real timer fire."""

from __future__ import annotations

import asyncio
import email.utils
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx2
import pytest

from forge.config import ProviderConfig
from forge.errors import UpstreamRateLimited
from forge.protocol.exchange import StreamHead
from forge.routing.provider_limits import (
    BATCH,
    FREE,
    LIVE,
    QUEUE_REFUSAL_CODE,
    Priority,
    ProviderQueue,
    ProviderQueues,
    ProviderRateLimits,
    Ticket,
    UpstreamLimits,
    parse_duration,
    parse_rate_limit_headers,
)
from serve.providers.anthropic import AnthropicProvider
from serve.providers.openai_compat import OpenAICompatProvider
from tests.fakes import rate_limits
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI

NOW = 1000.0  # the monotonic clock in header tests
WALL = 1_750_000_000.0  # the wall clock in header tests


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


async def spin() -> None:
    """Let the tasks that can run, run."""
    for _ in range(5):
        await asyncio.sleep(0)


def queue(clock: Clock, **limits: float | None) -> ProviderQueue:
    cfg = ProviderRateLimits(**limits) if limits else None
    return ProviderQueue("acme", cfg, clock=clock)


# ----------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("59.9s", 59.9),
        ("300us", 0.0003),
        ("0s", 0.0),
        ("7", 7.0),  # Azure: plain seconds
        ("0.5", 0.5),
    ],
)
def test_openai_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "1s2", "-1s", "abc", "1 s", "inf", "nan", "-3"])
def test_malformed_durations_are_none(text):
    assert parse_duration(text) is None


def test_openai_headers():
    headers = {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-limit-tokens": "160000",
        "x-ratelimit-remaining-tokens": "159976",
        "x-ratelimit-reset-tokens": "6m0s",
        "content-type": "application/json",
    }
    limits = parse_rate_limit_headers(headers, NOW, wall_now=WALL)
    assert limits == UpstreamLimits(
        observed_at=NOW,
        limit_requests=5000,
        remaining_requests=4999,
        requests_reset_at=pytest.approx(NOW + 0.012),
        limit_tokens=160000,
        remaining_tokens=159976,
        tokens_reset_at=NOW + 360,
    )


def test_anthropic_headers_rfc3339_and_the_tighter_token_limit():
    def rfc3339(seconds: float) -> str:
        return datetime.fromtimestamp(WALL + seconds, UTC).isoformat().replace("+00:00", "Z")

    headers = httpx2.Headers(
        {
            "anthropic-ratelimit-requests-limit": "1000",
            "anthropic-ratelimit-requests-remaining": "999",
            "anthropic-ratelimit-requests-reset": rfc3339(30),
            "anthropic-ratelimit-tokens-limit": "96000",
            "anthropic-ratelimit-tokens-remaining": "5000",
            "anthropic-ratelimit-tokens-reset": rfc3339(40),
            "anthropic-ratelimit-input-tokens-limit": "80000",
            "anthropic-ratelimit-input-tokens-remaining": "8000",
            "anthropic-ratelimit-input-tokens-reset": "2025-06-15T17:20:00+00:00",
            "anthropic-ratelimit-output-tokens-limit": "16000",
            "anthropic-ratelimit-output-tokens-remaining": "900",
            "anthropic-ratelimit-output-tokens-reset": rfc3339(12.5),
        }
    )
    limits = parse_rate_limit_headers(headers, NOW, wall_now=WALL)
    assert limits is not None
    assert (limits.limit_requests, limits.remaining_requests) == (1000, 999)
    assert limits.requests_reset_at == pytest.approx(NOW + 30)
    # output tokens are the tighter: their limit and reset are the ones reported
    assert (limits.limit_tokens, limits.remaining_tokens) == (16000, 900)
    assert limits.tokens_reset_at == pytest.approx(NOW + 12.5)
    assert limits.retry_at is None


def test_a_past_reset_is_now():
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2001-01-01T00:00:00Z",
    }
    limits = parse_rate_limit_headers(headers, NOW, wall_now=WALL)
    assert limits is not None and limits.requests_reset_at == NOW


def test_retry_after_forms():
    both = parse_rate_limit_headers({"retry-after-ms": "1500", "retry-after": "9"}, NOW)
    assert both is not None and both.retry_at == NOW + 1.5  # the SDKs read ms first
    seconds = parse_rate_limit_headers({"Retry-After": "7"}, NOW)
    assert seconds is not None and seconds.retry_at == NOW + 7
    date = email.utils.formatdate(WALL + 30, usegmt=True)
    dated = parse_rate_limit_headers({"retry-after": date}, NOW, wall_now=WALL)
    assert dated is not None and dated.retry_at == pytest.approx(NOW + 30)
    bad_ms = parse_rate_limit_headers({"retry-after-ms": "soon", "retry-after": "2"}, NOW)
    assert bad_ms is not None and bad_ms.retry_at == NOW + 2
    assert bad_ms.remaining_requests is None and bad_ms.remaining_tokens is None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json", "x-request-id": "abc"},
        {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-remaining-tokens": "1e9"},
        {"x-ratelimit-remaining-requests": "-1", "x-ratelimit-remaining-tokens": "-1"},  # Azure
        {"x-ratelimit-limit-requests": "100"},  # a limit without what remains of it
        {"anthropic-ratelimit-requests-remaining": ""},
        {"retry-after": "whenever"},
        {"retry-after": "-5", "retry-after-ms": "nan"},
    ],
)
def test_headers_without_usable_limits_are_none(headers):
    assert parse_rate_limit_headers(headers, NOW, wall_now=WALL) is None


def test_malformed_values_are_left_out_not_raised():
    headers = {
        "X-RateLimit-Remaining-Requests": "3",  # any case
        "x-ratelimit-reset-requests": "a while",
        "x-ratelimit-limit-requests": "many",
        "x-ratelimit-remaining-tokens": "12.5",
        "anthropic-ratelimit-requests-reset": "yesterday",
    }
    limits = parse_rate_limit_headers(headers, NOW, wall_now=WALL)
    assert limits == UpstreamLimits(observed_at=NOW, remaining_requests=3)


def test_limits_and_the_upstream_429_cross_processes():
    limits = UpstreamLimits(observed_at=NOW, remaining_requests=0, requests_reset_at=NOW + 2)
    assert pickle.loads(pickle.dumps(limits)) == limits
    error = UpstreamRateLimited("slow down", retry_after=2, provider="acme")
    error.limits = limits
    back = pickle.loads(pickle.dumps(error))
    assert back.limits == limits and back.retry_after == 2 and back.provider == "acme"
    plain = pickle.loads(pickle.dumps(UpstreamRateLimited("x", provider="p")))
    assert plain.limits is None


# ----------------------------------------------------------------------------- the queue


def test_rate_limits_config_is_strict():
    assert ProviderRateLimits().max_wait_s == 10
    for bad in ({"rpm": 0}, {"tpm": -1}, {"max_wait_s": 301}, {"max_wait_s": -1}, {"rps": 1}):
        with pytest.raises(ValueError):
            ProviderRateLimits(**bad)


async def test_no_limits_and_no_headers_cost_nothing():
    clock = Clock()
    q = queue(clock)
    assert await q.acquire(10**9, BATCH) is FREE
    FREE.settle(5)
    FREE.release()
    assert FREE.tokens == 0 and q.depth == 0
    queues = ProviderQueues({"a": None, "b": ProviderRateLimits(rpm=5)}, clock=clock)
    assert await queues.get("a").acquire(1, LIVE) is FREE
    assert await queues.get("unknown").acquire(1, LIVE) is FREE
    assert await queues.get("b").acquire(1, LIVE) is not FREE
    assert queues.depths() == {"a": 0, "b": 0, "unknown": 0}


async def test_rpm_bucket_refills_with_time():
    clock = Clock()
    q = queue(clock, rpm=2, max_wait_s=60)
    await q.acquire(1)
    await q.acquire(1)
    third = asyncio.create_task(q.acquire(1))
    await spin()
    assert not third.done() and q.depth == 1
    clock.advance(29.9)  # 2 a minute: one place every 30 s
    q.wake()
    await spin()
    assert not third.done()
    clock.advance(0.1)
    q.wake()
    await spin()
    assert isinstance(third.result(), Ticket) and q.depth == 0


async def test_waiters_go_in_priority_order():
    clock = Clock()
    q = queue(clock, rpm=1, max_wait_s=300)
    await q.acquire(1)  # the one place this minute
    order: list[str] = []

    async def request(name: str, priority: Priority) -> None:
        await q.acquire(1, priority)
        order.append(name)

    arrivals = [
        ("batch, top plan", Priority(rank=0, live=False)),
        ("live, lower plan", Priority(rank=1, live=True)),
        ("live, top plan, first", Priority(rank=0, live=True)),
        ("live, top plan, second", Priority(rank=0, live=True)),
    ]
    tasks = []
    for name, priority in arrivals:
        tasks.append(asyncio.create_task(request(name, priority)))
        await spin()
    assert q.depth == 4 and order == []
    for _ in arrivals:
        clock.advance(60)
        q.wake()
        await spin()
    await asyncio.gather(*tasks)
    assert order == [
        "live, top plan, first",
        "live, top plan, second",
        "batch, top plan",
        "live, lower plan",
    ]


async def test_a_wait_over_the_bound_is_a_429_naming_the_provider():
    clock = Clock()
    q = queue(clock, rpm=1, max_wait_s=30)
    await q.acquire(1)
    with pytest.raises(UpstreamRateLimited) as err:
        await q.acquire(1)
    error = err.value
    assert error.status_code == 429 and error.provider == "acme" and "'acme'" in error.message
    assert error.code == QUEUE_REFUSAL_CODE
    assert error.retry_after == pytest.approx(60)  # when its place would come
    assert error.headers()["retry-after"] == "60"
    assert q.depth == 0
    # the caller's own deadline bounds the wait too
    roomy = queue(clock, rpm=1, max_wait_s=300)
    await roomy.acquire(1)
    with pytest.raises(UpstreamRateLimited):
        await roomy.acquire(1, deadline=clock() + 59)
    waiter = asyncio.create_task(roomy.acquire(1, deadline=clock() + 61))
    await spin()
    clock.advance(60)
    roomy.wake()
    await spin()
    assert isinstance(waiter.result(), Ticket)


async def test_a_waiter_pushed_past_its_bound_is_refused():
    clock = Clock()
    q = queue(clock, rpm=1, max_wait_s=100)
    await q.acquire(1)
    batch = asyncio.create_task(q.acquire(1, BATCH))  # 60 s: within its bound
    await spin()
    live = asyncio.create_task(q.acquire(1, LIVE))  # goes first: batch now needs 120 s
    await spin()
    clock.advance(60)
    q.wake()
    await spin()
    assert isinstance(live.result(), Ticket)
    with pytest.raises(UpstreamRateLimited) as err:
        await batch  # refused now, not after waiting out its 100 s
    assert err.value.retry_after == pytest.approx(60) and q.depth == 0


async def test_a_waiter_whose_bound_passes_is_refused():
    clock = Clock()
    q = queue(clock, max_wait_s=5)
    q.refused(4)
    waiter = asyncio.create_task(q.acquire(1))
    await spin()
    q.refused(30)  # the provider said 429 again, for longer
    await spin()
    with pytest.raises(UpstreamRateLimited):
        await waiter
    assert q.depth == 0


async def test_cancelled_waiters_give_their_place_back():
    clock = Clock()
    q = queue(clock, rpm=1, max_wait_s=300)
    await q.acquire(1)
    first = asyncio.create_task(q.acquire(1))
    await spin()
    second = asyncio.create_task(q.acquire(1))
    await spin()
    assert q.depth == 2
    first.cancel()
    await spin()
    assert first.cancelled() and q.depth == 1
    clock.advance(60)  # one place: the second's, which no longer waits behind the first
    q.wake()
    await spin()
    assert isinstance(second.result(), Ticket)
    with pytest.raises(UpstreamRateLimited) as err:
        await queue_full(q)
    assert err.value.retry_after == pytest.approx(60)  # nothing leaked to the cancelled one


async def queue_full(q: ProviderQueue) -> Ticket:
    """An acquire that must wait more than it may (max_wait_s below 60 s)."""
    return await q.acquire(1, deadline=q._clock() + 30)


async def test_a_ticket_granted_as_its_waiter_is_cancelled_is_given_back():
    clock = Clock()
    q = queue(clock, rpm=1, max_wait_s=300)
    await q.acquire(1)
    waiter = asyncio.create_task(q.acquire(1))
    await spin()
    clock.advance(60)
    q.wake()  # grants the place...
    waiter.cancel()  # ...and the caller goes away before it resumes
    await spin()
    assert waiter.cancelled() and q.depth == 0
    clock.advance(0)
    assert isinstance(await q.acquire(1, deadline=clock() + 1), Ticket)  # the place is back


async def test_many_cancellations_do_not_pile_up():
    clock = Clock()
    q = queue(clock, rpm=1, max_wait_s=300)
    await q.acquire(1)
    for _ in range(50):
        task = asyncio.create_task(q.acquire(1, BATCH))
        await spin()
        task.cancel()
        await spin()
    assert q.depth == 0 and len(q._heap) <= 20


async def test_upstream_remaining_zero_holds_until_reset():
    clock = Clock()
    q = queue(clock)
    q.observe(
        UpstreamLimits(observed_at=clock(), remaining_requests=0, requests_reset_at=clock() + 5)
    )
    waiter = asyncio.create_task(q.acquire(1))
    await spin()
    clock.advance(4.9)
    q.wake()
    await spin()
    assert not waiter.done()
    clock.advance(0.1)
    q.wake()
    await spin()
    assert isinstance(waiter.result(), Ticket)
    assert await q.acquire(1) is FREE  # reset: the provider's view no longer constrains


async def test_upstream_limits_are_rebased_and_refill():
    clock = Clock()
    q = queue(clock, max_wait_s=30)
    # parsed in another process, whose clock reads -500 where this one reads 1000;
    # 60 requests a minute, none left, full in 60 s: one back every second
    q.observe(
        UpstreamLimits(
            observed_at=-500, limit_requests=60, remaining_requests=0, requests_reset_at=-440
        )
    )
    with pytest.raises(UpstreamRateLimited) as err:
        await q.acquire(1, deadline=clock() + 0.5)
    assert err.value.retry_after == pytest.approx(1)
    clock.advance(1)
    assert isinstance(await q.acquire(1), Ticket)
    # each request sent is counted against what the provider last said remains
    with pytest.raises(UpstreamRateLimited):
        await q.acquire(1, deadline=clock() + 0.5)


async def test_upstream_tokens_hold_only_when_none_remain():
    clock = Clock()
    q = queue(clock)
    q.observe(
        UpstreamLimits(observed_at=clock(), remaining_tokens=10, tokens_reset_at=clock() + 30)
    )
    assert isinstance(await q.acquire(50_000), Ticket)  # its count is not the platform's
    q.observe(UpstreamLimits(observed_at=clock(), remaining_tokens=0, tokens_reset_at=clock() + 3))
    with pytest.raises(UpstreamRateLimited) as err:
        await q.acquire(1, deadline=clock() + 2)
    assert err.value.retry_after == pytest.approx(3)


async def test_an_upstream_429_holds_everything_until_retry_after():
    clock = Clock()
    q = queue(clock)
    q.refused(3)
    tasks = [asyncio.create_task(q.acquire(1, p)) for p in (LIVE, BATCH, LIVE)]
    await spin()
    assert q.depth == 3
    clock.advance(3)
    q.wake()
    await spin()
    assert all(isinstance(t.result(), Ticket) for t in tasks) and q.depth == 0
    q.observe(UpstreamLimits(observed_at=clock(), retry_at=clock() + 2))  # a 429's headers
    with pytest.raises(UpstreamRateLimited) as err:
        await q.acquire(1, deadline=clock() + 1)
    assert err.value.retry_after == pytest.approx(2)


async def test_settle_corrects_the_token_estimate():
    clock = Clock()
    q = queue(clock, tpm=600, max_wait_s=5)  # 10 tokens a second
    ticket = await q.acquire(100)
    ticket.settle(600)  # it used more than estimated: the bucket is empty
    with pytest.raises(UpstreamRateLimited) as err:
        await q.acquire(100)
    assert err.value.retry_after == pytest.approx(10)
    ticket.settle(200)  # (corrected again) 400 back
    assert isinstance(await q.acquire(300), Ticket)
    # a refund lets a waiter go at once
    waiter = asyncio.create_task(q.acquire(140))  # 100 left: 4 s
    await spin()
    assert not waiter.done()
    ticket.settle(50)  # 150 back
    await spin()
    assert isinstance(waiter.result(), Ticket)


async def test_release_gives_the_request_back():
    clock = Clock()
    q = queue(clock, rpm=1, tpm=1000, max_wait_s=1)
    ticket = await q.acquire(900)
    ticket.release()
    ticket.release()  # once only
    ticket.settle(5)  # a released ticket corrects nothing
    assert isinstance(await q.acquire(1000), Ticket)


async def test_a_request_larger_than_the_tpm_goes_once_the_bucket_is_full():
    clock = Clock()
    q = queue(clock, tpm=600, max_wait_s=60)
    await q.acquire(300)
    big = asyncio.create_task(q.acquire(5000))
    await spin()
    clock.advance(30)
    q.wake()
    await spin()
    assert isinstance(big.result(), Ticket)


async def test_depths_per_provider():
    clock = Clock()
    queues = ProviderQueues(
        {"a": ProviderRateLimits(rpm=1, max_wait_s=300), "b": None}, clock=clock
    )
    await queues.get("a").acquire(1)
    tasks = [asyncio.create_task(queues.get("a").acquire(1)) for _ in range(3)]
    await spin()
    assert queues.depths() == {"a": 3, "b": 0}
    for task in tasks:
        task.cancel()
    await spin()
    assert queues.depths() == {"a": 0, "b": 0}


async def test_the_real_timer_lets_waiters_go():
    q = ProviderQueue("acme", ProviderRateLimits(max_wait_s=5))  # time.monotonic
    q.refused(0.05)
    ticket = await asyncio.wait_for(q.acquire(1), timeout=5)
    assert isinstance(ticket, Ticket) and q.depth == 0


# ----------------------------------------------------------------------------- providers


@pytest.fixture(scope="module")
def limited_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key="sk-upstream-test", rate_limits=(600, 100_000)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limited_anthropic() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key="sk-ant-test", rate_limits=(50, 40_000)).start()
    yield server
    server.stop()


BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture
def frozen_buckets(monkeypatch) -> None:
    """The fakes' buckets stop refilling (a far-off instant fills them once, then no
    time passes), so that counting down does not depend on how fast the machine is."""
    monkeypatch.setattr(rate_limits, "now", lambda: 1e12)


async def first_head(provider, body) -> StreamHead:
    head = None
    async for item in provider.stream("chat/completions", body, "pub", False):
        if isinstance(item, StreamHead):
            head = item
    assert head is not None
    return head


async def test_openai_provider_reports_the_limits(limited_openai, fake_openai, frozen_buckets):
    cfg = ProviderConfig(
        name="oai",
        type="openai_compatible",
        base_url=limited_openai.base_url,
        api_key_env="FAKE_UPSTREAM_KEY",
    )
    provider = OpenAICompatProvider(cfg)
    try:
        reply = await provider.complete("chat/completions", {**BODY, "model": "gpt-fake"}, "p")
        head = await first_head(provider, {**BODY, "model": "gpt-fake", "stream": True})
        with pytest.raises(UpstreamRateLimited) as err:
            await provider.complete("chat/completions", {**BODY, "model": "error-429"}, "p")
    finally:
        await provider.close()
    limits = reply.limits
    assert limits is not None
    assert (limits.limit_requests, limits.limit_tokens) == (600, 100_000)
    assert limits.remaining_requests is not None and limits.remaining_requests < 600
    assert limits.requests_reset_at is not None and limits.requests_reset_at > limits.observed_at
    assert limits.remaining_tokens is not None and limits.remaining_tokens < 100_000
    assert head.limits is not None and head.limits.remaining_requests is not None
    assert head.limits.remaining_requests < limits.remaining_requests
    error = err.value
    assert error.limits is not None and error.limits.retry_at is not None
    assert error.limits.retry_at == pytest.approx(error.limits.observed_at + 7)
    assert error.limits.remaining_requests is not None

    # an upstream without the headers: no limits, nothing parsed
    plain = OpenAICompatProvider(cfg.model_copy(update={"base_url": fake_openai.base_url}))
    try:
        reply = await plain.complete("chat/completions", {**BODY, "model": "gpt-fake"}, "p")
        head = await first_head(plain, {**BODY, "model": "gpt-fake", "stream": True})
    finally:
        await plain.close()
    assert reply.limits is None and head.limits is None


async def test_anthropic_provider_reports_the_limits(
    limited_anthropic, fake_anthropic, frozen_buckets
):
    cfg = ProviderConfig(
        name="claude",
        type="anthropic",
        base_url=limited_anthropic.url,
        api_key_env="FAKE_ANTHROPIC_KEY",
    )
    provider = AnthropicProvider(cfg)
    try:
        reply = await provider.complete("chat/completions", {**BODY, "model": "claude-x"}, "p")
        head = await first_head(provider, {**BODY, "model": "claude-x", "stream": True})
        with pytest.raises(UpstreamRateLimited) as err:
            await provider.complete("chat/completions", {**BODY, "model": "error-429"}, "p")
    finally:
        await provider.close()
    limits = reply.limits
    assert limits is not None
    assert (limits.limit_requests, limits.remaining_requests) == (50, 49)
    assert limits.requests_reset_at is not None and limits.requests_reset_at > limits.observed_at
    assert limits.limit_tokens == 8_000  # the output tokens: the tighter limit
    assert head.limits is not None and head.limits.remaining_requests == 48
    assert err.value.limits is not None
    assert err.value.limits.retry_at == pytest.approx(err.value.limits.observed_at + 11)

    plain = AnthropicProvider(cfg.model_copy(update={"base_url": fake_anthropic.url}))
    try:
        reply = await plain.complete("chat/completions", {**BODY, "model": "claude-x"}, "p")
    finally:
        await plain.close()
    assert reply.limits is None
