"""Validate a JSON value against a schema of the vendored OpenAI spec subset (JSON Schema
2020-12, as OpenAPI 3.1 uses), e.g. ``conforms("Response", body)``."""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.specs.extract_openai_subset import SUBSET, load

SPEC_URI = "urn:openai-openapi-subset"


def _openapi_30_bounds(node: Any) -> Any:
    """The spec keeps a few OpenAPI 3.0 bounds (``exclusiveMinimum: true`` beside
    ``minimum``), which JSON Schema 2020-12 reads as the number 1 (so a
    ``learning_rate_multiplier`` of 1.0 would fail "> 1"): rewritten to what they mean."""
    if isinstance(node, dict):
        node = {k: _openapi_30_bounds(v) for k, v in node.items()}
        for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(node.get(bound), bool):
                exclusive = node.pop(bound)
                if exclusive and limit in node:
                    node[bound] = node.pop(limit)
        return node
    if isinstance(node, list):
        return [_openapi_30_bounds(v) for v in node]
    return node


@cache
def validator(schema: str) -> Draft202012Validator:
    spec = _openapi_30_bounds(load(SUBSET))
    if schema not in spec["components"]["schemas"]:
        raise KeyError(f"{schema} is not in the vendored subset")
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry: Registry = Registry().with_resource(SPEC_URI, resource)
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#/components/schemas/{schema}"}, registry=registry
    )


def violations(schema: str, value: Any) -> list[str]:
    """Every way ``value`` breaks the spec's ``schema``, one line each (empty: it conforms)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
        for e in validator(schema).iter_errors(value)
    ]


EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "error": "ResponseErrorEvent",
}


def event_violations(event: dict[str, Any]) -> list[str]:
    """A Responses stream event against its own schema (for readable failures) and
    against the ``ResponseStreamEvent`` union the spec declares for the stream."""
    own = violations(EVENT_SCHEMAS.get(event.get("type", ""), "ResponseStreamEvent"), event)
    return own or violations("ResponseStreamEvent", event)
