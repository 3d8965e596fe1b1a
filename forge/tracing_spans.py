"""What the relay writes on its trace spans (forge.tracing): the OpenTelemetry API
only, which the replica has loaded anyway; the SDK is imported only when tracing is on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry.context import Context, attach, detach
from opentelemetry.trace import Span, Status, StatusCode, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from forge.usage import UsageEvent

_PROPAGATOR = TraceContextTextMapPropagator()


def caller_context(headers: Mapping[str, str]) -> Context | None:
    """The caller's trace, from its W3C ``traceparent`` header (None: it sent none)."""
    if "traceparent" not in headers:
        return None
    return _PROPAGATOR.extract(
        {k: headers[k] for k in ("traceparent", "tracestate") if k in headers}
    )


def trace_headers() -> dict[str, str]:
    """The current span as a W3C ``traceparent`` for an upstream call (the relay makes a
    try's span current around it; a provider deployment's replica, the caller's span it
    was handed: ``continued``); empty when nothing is traced, at the cost of one context
    lookup."""
    if not get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


@contextmanager
def continued(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """A trace handed across a process (``trace_headers()`` of the gateway's try, sent
    with a call through a Serve handle) made current here, so that the upstream call
    made inside carries it on. No spans are made here: the try's span is the call's."""
    if not carrier:
        yield
        return
    token = attach(_PROPAGATOR.extract(dict(carrier)))
    try:
        yield
    finally:
        detach(token)


def end_request_span(span: Span, event: UsageEvent) -> None:
    """End a request's span with what its usage record says."""
    span.set_attributes(
        {
            "forge.model": event.model,
            "forge.provider": event.provider,
            "forge.status": event.status,
            "http.response.status_code": event.http_status,
            "forge.prompt_tokens": event.prompt_tokens,
            "forge.completion_tokens": event.completion_tokens,
            "forge.cost_usd": event.cost_usd,
            "forge.route": event.route or "",
            "forge.stream": event.stream,
        }
    )
    if event.status not in ("ok", "client_disconnected"):
        span.set_status(Status(StatusCode.ERROR, event.error_code or event.status))
    span.end()


def end_failed_span(span: Span, status: int, code: str | None) -> None:
    """End a span whose work failed (a try, or a request refused before any provider)."""
    span.set_attribute("http.response.status_code", status)
    span.set_status(Status(StatusCode.ERROR, code or str(status)))
    span.end()
