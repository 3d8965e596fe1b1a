"""``response_format`` parsed, checked and compiled for constrained decoding: every way a
request is refused, as OpenAI's 400 naming the field, and the policy a schema cannot
loosen."""

from __future__ import annotations

from typing import Any

import pytest

from forge.errors import InvalidRequest
from serve.structured.grammar import GrammarCache
from serve.structured.spec import (
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    SCHEMA_PARAM,
    Constraint,
    parse_response_format,
)

pytest.importorskip("llguidance")


@pytest.fixture(scope="module")
def grammars() -> GrammarCache:
    from serve.models.tiny import TinyModelSpec, build_tokenizer

    tokenizer = build_tokenizer(TinyModelSpec(corpus_files=5))
    return GrammarCache.from_hf(tokenizer, n_vocab=1000, eos_ids=[tokenizer.eos_token_id])


def schema_format(schema: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, **extra}}


def refused(response_format: Any, grammars: GrammarCache | None = None) -> InvalidRequest:
    """The 400 for ``response_format``: when parsing it, or compiling it for the tokenizer."""
    with pytest.raises(InvalidRequest) as err:
        constraint = parse_response_format(response_format)
        assert constraint is not None and grammars is not None
        grammars.matcher(constraint)
    assert err.value.status_code == 400
    return err.value


def test_text_or_nothing_is_no_constraint_and_json_modes_are():
    assert parse_response_format(None) is None
    assert parse_response_format({"type": "text"}) is None
    plain = parse_response_format({"type": "json_object"})
    assert isinstance(plain, Constraint) and plain.kind == "json_object"
    assert plain.param == "response_format"
    typed = parse_response_format(schema_format({"type": "object"}, strict=True))
    assert typed is not None and typed.kind == "json_schema" and typed.name == "out"
    assert typed.param == SCHEMA_PARAM
    # The cache's key: one per grammar (key order counts: it orders the output's properties).
    a = parse_response_format(schema_format({"type": "integer", "minimum": 1, "maximum": 3}))
    b = parse_response_format(schema_format({"type": "integer", "minimum": 1, "maximum": 3}))
    assert a is not None and b is not None and a.key == b.key != typed.key


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ("json_object", "response_format"),
        ({"type": "yaml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, SCHEMA_PARAM),
        (schema_format('{"type": "object"}'), SCHEMA_PARAM),  # a string, not an object
        (schema_format([{"type": "object"}]), SCHEMA_PARAM),
        (schema_format(True), SCHEMA_PARAM),
        (schema_format({"type": "object"}, strict="yes"), "response_format.json_schema.strict"),
        (
            {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}},
            "response_format.json_schema.name",
        ),
    ],
)
def test_a_malformed_response_format_is_invalid_value(response_format, param):
    err = refused(response_format)
    assert err.param == param and err.code == "invalid_value"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "strnig"},
        {"type": "object", "properties": {"a": {"minLength": -1}}},
        {"type": "array", "items": {"type": "string"}, "maxItems": "3"},
    ],
)
def test_a_schema_its_metaschema_rejects_is_invalid_value(schema):
    err = refused(schema_format(schema))
    assert err.param == SCHEMA_PARAM and err.code == "invalid_value"
    assert "Invalid JSON schema" in err.message


def test_a_schema_too_large_or_too_deep_is_refused_before_compiling():
    wide = {"enum": ["x" * 1000] * (MAX_SCHEMA_BYTES // 1000 + 1)}
    assert "bytes" in refused(schema_format(wide)).message
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH):
        deep = {"type": "array", "items": deep}
    err = refused(schema_format(deep))
    assert "deeper" in err.message and err.code == "invalid_value"


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
        (
            {
                "type": "object",
                "properties": {"n": {"type": "integer", "multipleOf": 3, "not": {"const": 6}}},
            },
            "not",
        ),
    ],
)
def test_a_keyword_it_cannot_enforce_is_unsupported_and_named(grammars, schema, named):
    err = refused(schema_format(schema), grammars)
    assert err.code == "unsupported_parameter" and err.param == SCHEMA_PARAM
    assert named in err.message


def test_an_unknown_format_is_unsupported_and_named(grammars):
    err = refused(schema_format({"type": "string", "format": "postcode"}), grammars)
    assert err.code == "unsupported_parameter" and "'postcode'" in err.message
    # A format it knows is enforced.
    ok = parse_response_format(schema_format({"type": "string", "format": "date"}))
    assert ok is not None and not grammars.matcher(ok).is_error()


def test_x_guidance_in_the_schema_cannot_loosen_the_policy(grammars):
    """Leniency would drop the keywords it cannot enforce (silently unenforced)."""
    lenient = {
        "type": "array",
        "items": {"type": "integer"},
        "uniqueItems": True,
        "x-guidance": {"lenient": True},
    }
    err = refused(schema_format(lenient), grammars)
    assert err.code == "unsupported_parameter" and "uniqueItems" in err.message
    # Nor its separators or whitespace: the grammar is the same as without x-guidance.
    plain = {"type": "object", "properties": {"a": {"type": "integer"}}}
    loose = {**plain, "x-guidance": {"whitespace_flexible": True, "item_separator": ";"}}
    a = parse_response_format(schema_format(plain))
    b = parse_response_format(schema_format(loose))
    assert a is not None and b is not None and a.grammar == b.grammar
