"""Is a chat answer what the caller asked for? Empty, cut short by ``max_tokens``,
refused, or (with ``response_format``) not JSON or not the schema's JSON.

The verdict goes out in ``x-forge-validation`` and into the usage record's
``validation``; with ``x-forge-validate: retry`` (or the model's ``validation: retry``)
an invalid JSON answer is sent back once with what was wrong (``correction``).
Self-hosted engines enforce ``response_format`` by constrained decoding; providers
mostly promise to; this checks both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from forge.errors import InvalidRequest

Check = Literal[
    "ok", "empty", "truncated", "refused", "invalid_json", "schema_mismatch", "corrected"
]
VALIDATION_HEADER = "x-forge-validation"
VALIDATE_HEADER = "x-forge-validate"  # the caller's choice: report (default) or retry
MESSAGE_MAX = 200


@dataclass(frozen=True, slots=True)
class Finding:
    check: Check
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.check in ("ok", "corrected")

    @property
    def correctable(self) -> bool:
        """A retry with the error named can fix it (not an empty or cut-short answer:
        the same request would fail the same way)."""
        return self.check in ("invalid_json", "schema_mismatch")

    def header(self) -> str:
        """One ASCII line (the message may quote the answer)."""
        text = self.check if not self.message else f"{self.check}; {self.message}"
        return text.encode("ascii", "backslashreplace").decode("ascii")


OK = Finding("ok")


def check_chat_answer(answer: dict[str, Any], response_format: Any) -> Finding:
    """The first choice of a Chat Completions answer against the request's
    ``response_format`` (None, or a dict as the caller sent it)."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Finding("empty", "the answer has no choices")
    choice = choices[0]
    found = choice.get("message")
    message: dict[str, Any] = found if isinstance(found, dict) else {}
    if message.get("refusal") or choice.get("finish_reason") == "content_filter":
        return Finding("refused", "the model refused or its answer was filtered")
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    if not text.strip() and not message.get("tool_calls"):
        return Finding("empty", "the answer has no content")
    if choice.get("finish_reason") == "length":
        return Finding("truncated", "the answer was cut short by max_tokens")
    if message.get("tool_calls"):
        return OK
    return _as_json(text, response_format)


def wants_json(response_format: Any) -> bool:
    """Whether ``response_format`` asks for JSON (so a streamed answer's text is kept
    to be checked: nothing else costs a streamed chunk a parse)."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    return kind in ("json_object", "json_schema")


def check_stream_end(
    finish_reason: str | None,
    content_chunks: int,
    text: str | None = None,
    response_format: Any = None,
) -> Finding:
    """A streamed answer, from how it ended: empty, cut short or filtered; and, given
    its ``text``, its JSON against ``response_format``. Its text has gone out chunk by
    chunk: the finding is reported and recorded, nothing can be retried."""
    if finish_reason == "content_filter":
        return Finding("refused", "the answer was filtered")
    if content_chunks == 0:
        return Finding("empty", "the stream carried no content")
    if finish_reason == "length":
        return Finding("truncated", "the answer was cut short by max_tokens")
    if text is None or finish_reason == "tool_calls":
        return OK
    return _as_json(text, response_format)


def _as_json(text: str, response_format: Any) -> Finding:
    if not wants_json(response_format):
        return OK
    try:
        value = json.loads(text)
    except ValueError as exc:
        return Finding("invalid_json", _short(f"not JSON: {exc}"))
    if response_format.get("type") == "json_object":
        return OK if isinstance(value, dict) else Finding("invalid_json", "not a JSON object")
    schema = (response_format.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        return OK
    return _against_schema(value, schema)


def _against_schema(value: Any, schema: dict[str, Any]) -> Finding:
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except SchemaError:
        return OK  # the request's own schema is broken: nothing to hold the answer to
    error = next(iter(validator.iter_errors(value)), None)
    if error is None:
        return OK
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return Finding("schema_mismatch", _short(f"at {where}: {error.message}"))


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    """A checked validator per distinct schema (callers send the same few, every time)."""
    schema = json.loads(schema_json)
    cls = validator_for(schema, default=Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)


def correction(body: dict[str, Any], answer_text: str, finding: Finding) -> dict[str, Any]:
    """The request again, with the invalid answer and what was wrong with it."""
    fix = (
        f"Your answer was not valid: {finding.message}. Answer again with only the JSON "
        "that the response format asks for, and nothing else."
    )
    messages = [
        *body.get("messages", []),
        {"role": "assistant", "content": answer_text},
        {"role": "user", "content": fix},
    ]
    return {**body, "messages": messages}


def answer_text(answer: dict[str, Any]) -> str:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


Mode = Literal["off", "report", "retry"]


def requested_mode(headers: Mapping[str, str]) -> Mode | None:
    """The caller's ``x-forge-validate`` (None: the model's own setting); a 400 for any
    other value."""
    raw = headers.get(VALIDATE_HEADER)
    if raw is None:
        return None
    mode = raw.strip().lower()
    if mode not in ("off", "report", "retry"):
        raise InvalidRequest(
            f"Header {VALIDATE_HEADER!r} must be off, report or retry, not {raw!r}.",
            param=VALIDATE_HEADER,
            code="invalid_header",
        )
    return mode  # type: ignore[return-value]
