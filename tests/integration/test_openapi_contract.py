"""Contract test: fuzzed requests from OpenAI's own OpenAPI spec against the running
platform. Every response must be no server error, and every success must match the
spec's response schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

# OpenAI's spec cut down to the implemented operations, kept in the repository so that this
# test runs on every clone (tests/specs/; tests/unit/test_openai_spec_subset.py checks it
# against the full spec wherever that is present).
SPEC = Path(__file__).resolve().parents[1] / "specs" / "openai-openapi.subset.yaml"
OPERATIONS = [
    ("/chat/completions", "POST"),
    ("/completions", "POST"),
    ("/embeddings", "POST"),
    ("/models", "GET"),
    ("/models/{model}", "GET"),
    ("/responses", "POST"),
]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def add_discriminator_mappings(spec: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's spec declares discriminators without a mapping, which per OpenAPI means the
    value must be the schema's name ("ChatCompletionMessageToolCall"), while OpenAI's API
    itself sends the `type` enum value ("function"). Map each `type` value to its schema,
    as OpenAI's own SDKs do, so that real responses validate."""
    schemas = spec["components"]["schemas"]
    for node in _walk(spec):
        disc = node.get("discriminator")
        variants = node.get("oneOf") or node.get("anyOf")
        if not isinstance(disc, dict) or "mapping" in disc or not variants:
            continue
        mapping = {}
        for variant in variants:
            ref = variant.get("$ref", "")
            prop = schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
            values = prop.get(disc["propertyName"], {})
            for value in values.get("enum", []) + ([values["const"]] if "const" in values else []):
                mapping[value] = ref
        if mapping:
            disc["mapping"] = mapping
    return spec


@pytest.fixture(scope="module")
def openai_schema():
    spec = yaml.load(SPEC.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return schemathesis.openapi.from_dict(add_discriminator_mappings(spec))


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_operation_conforms_to_openai_spec(platform, openai_schema, path, method):
    operation = openai_schema[path][method]
    served = {
        "/chat/completions": "gpt-test",
        "/completions": "gpt-test",
        "/embeddings": "embed-test",
        "/responses": "gpt-test",
    }
    headers = {"Authorization": f"Bearer {platform.user_key}"}
    seen: dict[int, int] = {}

    @settings(
        max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=operation.as_strategy())
    def check(case):
        if isinstance(case.body, dict) and path in served:
            # Half the cases name a served model so that successes are checked too.
            if hash(repr(case.body)) % 2:
                case.body["model"] = served[path]
            case.body.pop("stream", None)  # streams are covered by the SDK tests
            if case.body.get("encoding_format") == "base64":
                # The spec types `embedding` as floats only, yet OpenAI (and we) answer a
                # base64 string when asked; the SDK tests cover that case.
                case.body["encoding_format"] = "float"
        if path == "/models/{model}" and hash(repr(case.path_parameters)) % 2:
            case.path_parameters = {"model": "gpt-test"}
        response = case.call(base_url=platform.url + "/v1", headers=headers, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}

    check()
    # Generated bodies may all be refused (values out of range, wrong types) in a run:
    # one minimal valid request makes sure a success is always checked too.
    minimal = {
        "/chat/completions": {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]},
        "/completions": {"model": "gpt-test", "prompt": "hi"},
        "/embeddings": {"model": "embed-test", "input": "hi"},
        "/responses": {"model": "gpt-test", "input": "hi"},
    }
    if path in minimal:
        case = operation.Case(body=minimal[path], media_type="application/json")
    elif path == "/models/{model}":
        case = operation.Case(path_parameters={"model": "gpt-test"})
    else:
        case = operation.Case()
    response = case.call(base_url=platform.url + "/v1", headers=headers, timeout=30)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
    seen[response.status_code] = seen.get(response.status_code, 0) + 1
    assert seen.get(200), f"no success was checked against the spec: {seen}"
