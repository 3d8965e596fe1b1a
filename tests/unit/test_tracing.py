"""OpenTelemetry traces through the gateway with the official SDK: one request span per
call, ended with what its usage record says, a child span per provider try (fallbacks
and retries read as a timeline), the caller's traceparent honoured, refusals before any
provider ended too; streams end their span when the stream ends; off by default."""

from __future__ import annotations

import asyncio

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from forge.config import ProviderConfig, TracingConfig
from forge.tracing import Tracing
from forge.tracing_spans import continued
from serve.deployments import ProviderDeployment
from serve.handles import _extras
from tests.unit.harness import in_process_gateway, platform_config, usage_rows

MSG = [{"role": "user", "content": "hello"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
async def traced(fake_openai, sqlite_engine):
    exporter = InMemorySpanExporter()
    tracing = Tracing(TracingConfig(enabled=True), exporter)
    config = platform_config(fake_openai.base_url)
    async with in_process_gateway(config, sqlite_engine, tracing=tracing) as gw:
        gw.exporter = exporter
        yield gw


def _spans(gw):
    gw.runtime.tracing.flush()
    return gw.exporter.get_finished_spans()


async def test_a_request_and_its_try(traced, fake_openai):
    raw = await traced.sdk().chat.completions.with_raw_response.create(
        model="gpt-test", messages=MSG, extra_headers={"traceparent": TRACEPARENT}
    )
    await usage_rows(traced)  # the record settled
    spans = {s.name: s for s in _spans(traced)}
    request, call = spans["forge.request"], spans["forge.provider.call"]
    assert format(request.context.trace_id, "032x") == TRACE_ID  # the caller's trace
    assert call.parent.span_id == request.context.span_id
    assert request.attributes["forge.request_id"] == raw.headers["x-request-id"]
    assert request.attributes["forge.model"] == "gpt-test"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["forge.completion_tokens"] > 0
    assert call.attributes["forge.provider_model"] == "gpt-fake"
    assert request.status.status_code != StatusCode.ERROR
    sent = fake_openai.requests[-1]["headers"]  # the trace goes on to the provider
    assert sent["traceparent"] == f"00-{TRACE_ID}-{call.context.span_id:016x}-01"


async def test_a_fallback_is_two_tries_under_one_request(traced):
    await traced.sdk().chat.completions.create(model="flaky", messages=MSG)
    await usage_rows(traced)
    spans = _spans(traced)
    tries = [s for s in spans if s.name == "forge.provider.call"]
    failed = [s for s in tries if s.status.status_code == StatusCode.ERROR]
    assert {s.attributes["forge.model"] for s in failed} == {"flaky"}
    assert tries[-1].attributes["forge.model"] == "gpt-test"
    (request,) = [s for s in spans if s.name == "forge.request"]
    assert {s.parent.span_id for s in tries} == {request.context.span_id}
    assert request.attributes["forge.route"]


async def test_a_refusal_before_any_provider_ends_its_span(traced):
    with pytest.raises(openai.BadRequestError):
        await traced.sdk().chat.completions.create(
            model="gpt-test", messages=MSG, extra_headers={"x-forge-max-cost": "-1"}
        )
    with pytest.raises(openai.NotFoundError):
        await traced.sdk().chat.completions.create(model="no-such-model", messages=MSG)
    spans = [s for s in _spans(traced) if s.name == "forge.request"]
    assert spans and all(s.status.status_code == StatusCode.ERROR for s in spans)
    assert 404 in {s.attributes["http.response.status_code"] for s in spans}


async def test_a_stream_ends_its_span_when_it_ends(traced):
    stream = await traced.sdk().chat.completions.create(model="gpt-test", messages=MSG, stream=True)
    async for _ in stream:
        pass
    await usage_rows(traced)
    (request,) = [s for s in _spans(traced) if s.name == "forge.request"]
    assert request.attributes["forge.stream"] is True  # ended by the stream's record
    assert request.attributes["forge.completion_tokens"] > 0


async def test_failures_are_errors_with_their_code(traced):
    with pytest.raises(openai.InternalServerError):
        await traced.sdk().chat.completions.create(model="error-500", messages=MSG)
    await usage_rows(traced)
    (request,) = [s for s in _spans(traced) if s.name == "forge.request"]
    assert request.status.status_code == StatusCode.ERROR
    assert request.attributes["forge.status"] == "error"


async def test_off_by_default(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as gw:
        assert gw.runtime.tracing is None and gw.runtime.relay.tracer is None
        await gw.sdk().chat.completions.create(
            model="gpt-test", messages=MSG, extra_headers={"traceparent": TRACEPARENT}
        )
    assert "traceparent" not in fake_openai.requests[-1]["headers"]  # not passed on


def test_the_otlp_exporter_is_an_optional_extra():
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"promptforge\[otel\]"):
            Tracing(TracingConfig(enabled=True, exporter="otlp"))
    else:
        assert Tracing(TracingConfig(enabled=True, exporter="otlp")).tracer


async def test_spans_reach_an_otlp_collector(fake_openai, sqlite_engine):
    """The OTLP/HTTP exporter (the [otel] extra) against a collector that decodes what it
    receives with OpenTelemetry's own protobuf schema."""
    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.headers["Content-Type"] == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    config = TracingConfig(
        enabled=True, endpoint=f"http://127.0.0.1:{port}/v1/traces", service_name="forge-test"
    )
    try:
        platform = platform_config(fake_openai.base_url).model_copy(update={"tracing": config})
        async with in_process_gateway(platform, sqlite_engine) as gw:
            await gw.sdk().chat.completions.create(model="gpt-test", messages=MSG)
            await usage_rows(gw)
            tracing = gw.runtime.tracing
            assert tracing is not None
            await asyncio.to_thread(tracing.flush)  # the exporter posts from this thread
    finally:
        await runner.cleanup()
    spans = [
        (span.name, resource.resource)
        for message in received
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert {name for name, _ in spans} == {"forge.request", "forge.provider.call"}
    service = {
        a.value.string_value for _, res in spans for a in res.attributes if a.key == "service.name"
    }
    assert service == {"forge-test"}


async def test_a_provider_deployment_carries_the_trace_it_is_handed_upstream(fake_openai):
    """Through a Serve handle the gateway's try span crosses to another process as
    ``trace`` (serve/handles.py); the deployment's upstream call carries it on, for
    answers and streams alike, and nothing without it."""
    deployment = ProviderDeployment.func_or_class(  # the class under @serve.deployment
        ProviderConfig(
            name="proxied",
            type="openai_compatible",
            base_url=fake_openai.base_url,
            api_key_env="FAKE_UPSTREAM_KEY",
        )
    )
    body = {"model": "gpt-fake", "messages": MSG}
    trace = {"traceparent": TRACEPARENT}
    try:
        await deployment.complete("chat/completions", body, "gpt-test", trace=trace)
        assert fake_openai.requests[-1]["headers"]["traceparent"] == TRACEPARENT
        streamed = deployment.stream(
            "chat/completions", {**body, "stream": True}, "gpt-test", True, trace=trace
        )
        assert [item async for item in streamed]
        assert fake_openai.requests[-1]["headers"]["traceparent"] == TRACEPARENT
        await deployment.complete("chat/completions", body, "gpt-test")
        assert "traceparent" not in fake_openai.requests[-1]["headers"]
    finally:
        await deployment.provider.close()


def test_a_handle_call_hands_the_current_trace_over():
    """What serve/handles.py sends beside a request: the caller's key and the trace,
    each only when there is one."""
    assert _extras(None) == {} and _extras("sk-own") == {"api_key": "sk-own"}
    with continued({"traceparent": TRACEPARENT}):
        assert _extras(None) == {"trace": {"traceparent": TRACEPARENT}}
    assert _extras(None) == {}
