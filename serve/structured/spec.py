"""A chat request's ``response_format`` as a ``Constraint``: checked, and compiled to an
llguidance grammar, before any engine work; whatever cannot be enforced is a 400.

Policy: no whitespace between JSON tokens and no leniency (a keyword llguidance cannot
enforce is refused, naming it, rather than ignored), whatever the schema's own
``x-guidance`` says (dropped, and overridden). jsonschema and llguidance are imported on
first use: the engine interface imports this module in every venv.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from forge.errors import InvalidRequest

if TYPE_CHECKING:
    from llguidance import LLTokenizer
    from llguidance._lib import JsonCompileOptions

SCHEMA_PARAM = "response_format.json_schema.schema"
MAX_SCHEMA_BYTES = 64 * 1024  # of the schema as compact JSON
MAX_SCHEMA_DEPTH = 32  # nested objects and arrays in the schema document
POLICY: JsonCompileOptions = {"whitespace_flexible": False, "lenient": False}
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[([^\]]*)\]")
_UNKNOWN_FORMAT = re.compile(r"Unknown format: (\S+)")


@dataclass(frozen=True, slots=True)
class Constraint:
    """What a request's output must match: a JSON schema, or any JSON object."""

    kind: Literal["json_schema", "json_object", "tool_calls"]
    grammar: str = field(repr=False)  # llguidance's, from grammar_from_json_schema
    key: str  # the grammar's digest: what compiled matchers are cached by
    name: str | None = None
    param: str = SCHEMA_PARAM  # the request field an error about this constraint names
    schema: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def parse_response_format(value: Any) -> Constraint | None:
    """The constraint an OpenAI chat body's ``response_format`` asks for (None: plain
    text); a 400 when it is malformed, its schema invalid, too large or too deep."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("'response_format' must be an object.", "response_format")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return compile_schema("json_object", {"type": "object"}, None, "response_format")
    if kind != "json_schema":
        raise invalid(
            f"Invalid 'response_format.type': {kind!r}; expected 'text', 'json_object' or "
            "'json_schema'.",
            "response_format.type",
        )
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid(
            "'response_format.json_schema' must be an object.", "response_format.json_schema"
        )
    name = spec.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
        raise invalid(
            "'response_format.json_schema.name' must be 1-64 letters, digits, '_' or '-'.",
            "response_format.json_schema.name",
        )
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid(
            "'response_format.json_schema.strict' must be a boolean.",
            "response_format.json_schema.strict",
        )
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise invalid(f"'{SCHEMA_PARAM}' must be a JSON object (a JSON Schema).", SCHEMA_PARAM)
    return compile_schema("json_schema", schema, name, SCHEMA_PARAM)


def compile_schema(
    kind: Literal["json_schema", "json_object", "tool_calls"],
    schema: dict[str, Any],
    name: str | None,
    param: str,
) -> Constraint:
    """``schema`` checked (size, depth, metaschema) and compiled; ``param`` is the
    request field a 400 about it names."""
    try:
        encoded = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # not JSON (only a caller that did not parse JSON can do it)
        raise invalid(f"'{param}' is not JSON: {exc}", param) from None
    if len(encoded) > MAX_SCHEMA_BYTES:
        raise invalid(
            f"The schema is {len(encoded)} bytes as compact JSON; at most {MAX_SCHEMA_BYTES}.",
            param,
        )
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise invalid(f"The schema nests deeper than {MAX_SCHEMA_DEPTH} levels.", param)
    check_schema(schema, param)
    from llguidance import LLMatcher

    # The schema's own x-guidance would set the compiler's options (separators,
    # whitespace, leniency): ours are the policy, so it goes, and the overrides win.
    policed = {k: v for k, v in schema.items() if k != "x-guidance"}
    try:
        grammar = LLMatcher.grammar_from_json_schema(policed, overrides=POLICY)
    except ValueError as exc:
        raise invalid(f"Invalid JSON schema: {exc}", param) from None
    key = hashlib.sha256(grammar.encode()).hexdigest()
    return Constraint(kind, grammar, key, name, param, policed)


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_SCHEMA_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_schema(schema: dict[str, Any], param: str) -> None:
    """The schema against its metaschema (its ``$schema``'s draft; 2020-12 by default)."""
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import SchemaError

    try:
        validators.validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        at = f" at '{where}'" if where else ""
        raise invalid(f"Invalid JSON schema{at}: {exc.message}", param) from None


def check_grammar(constraint: Constraint, tokenizer: LLTokenizer) -> None:
    """The grammar against the model's tokenizer: a 400 naming what cannot be enforced."""
    from llguidance import LLMatcher

    failed, messages = LLMatcher.validate_grammar_with_warnings(constraint.grammar, tokenizer)
    if failed:
        raise grammar_error(messages[0] if messages else "unknown error", constraint.param)


def grammar_error(message: str, param: str) -> InvalidRequest:
    """llguidance's error as a 400: ``unsupported_parameter`` naming the keyword or format
    it cannot enforce, else ``invalid_value``."""
    if found := _UNIMPLEMENTED.search(message):
        keys = ", ".join(k.strip().strip('"') for k in found.group(1).split(","))
        return InvalidRequest(
            f"JSON Schema keyword(s) not supported by constrained decoding on this model: {keys}.",
            param=param,
            code="unsupported_parameter",
        )
    if found := _UNKNOWN_FORMAT.search(message):
        return InvalidRequest(
            f"JSON Schema format {found.group(1)!r} is not supported by constrained decoding "
            "on this model.",
            param=param,
            code="unsupported_parameter",
        )
    return invalid(f"Invalid JSON schema: {message}", param)
