"""OpenTelemetry traces of the platform's calls, optional (``tracing.enabled``).

A request's span (``forge.request``) starts in the relay and ends where its usage record
is settled, the one place every call ends however it ends (answered, failed, client
gone, mid-stream error); each try at a provider is a child span
(``forge.provider.call``: provider, model, attempt, outcome), so fallbacks and retries
read as a timeline. A caller's W3C ``traceparent`` makes the request's span part of the
caller's trace.

The tracer provider is the platform's own, not OpenTelemetry's global one: Ray and
other libraries in the replica keep theirs. Disabled (the default), no tracer exists
and the relay's hot path pays one ``is None`` test per call.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Tracer

from forge.config import TracingConfig


class Tracing:
    """The platform's tracer and what it exports to (``exporter`` given: tests)."""

    def __init__(self, config: TracingConfig, exporter: SpanExporter | None = None) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter or _exporter(config)))
        self.tracer: Tracer = self.provider.get_tracer("promptforge")

    def flush(self) -> bool:
        return self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()


def _exporter(config: TracingConfig) -> SpanExporter:
    if config.exporter == "console":
        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:  # an optional extra
        raise ValueError(
            "tracing.exporter otlp needs the OTLP exporter: pip install 'promptforge[otel]'"
        ) from None
    return OTLPSpanExporter(endpoint=config.endpoint)
