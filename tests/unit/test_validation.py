"""Answer validation: the checks themselves, and through the gateway with the official
SDK against the fake OpenAI upstream (report, one corrective retry, the usage record)."""

from __future__ import annotations

import json

import openai
import pytest

from forge.errors import InvalidRequest
from forge.quality.validation import (
    Finding,
    check_chat_answer,
    check_stream_end,
    correction,
    requested_mode,
)
from tests.unit.harness import in_process_gateway, platform_config, usage_rows

MSG = [{"role": "user", "content": "where is the Eiffel tower?"}]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "place",
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _answer(content, finish="stop", **message):
    return {
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "message": {"role": "assistant", "content": content, **message},
            }
        ]
    }


@pytest.mark.parametrize(
    ("answer", "fmt", "check"),
    [
        (_answer("Paris."), None, "ok"),
        (_answer(""), None, "empty"),
        (_answer("   \n"), {"type": "json_object"}, "empty"),
        ({"choices": []}, None, "empty"),
        (_answer("Par", finish="length"), None, "truncated"),
        (_answer(None, refusal="I can't help with that."), None, "refused"),
        (_answer("x", finish="content_filter"), None, "refused"),
        (_answer('{"city": "Paris"}'), {"type": "json_object"}, "ok"),
        (_answer("Sure! {}"), {"type": "json_object"}, "invalid_json"),
        (_answer("[1, 2]"), {"type": "json_object"}, "invalid_json"),
        (_answer('{"city": "Paris"}'), SCHEMA, "ok"),
        (_answer('{"town": "Paris"}'), SCHEMA, "schema_mismatch"),
        (_answer('{"city": 7}'), SCHEMA, "schema_mismatch"),
        (_answer("plain words"), {"type": "text"}, "ok"),
        (
            _answer(None, finish="tool_calls", tool_calls=[{"id": "c", "type": "function"}]),
            SCHEMA,
            "ok",
        ),
    ],
)
def test_checks(answer, fmt, check):
    assert check_chat_answer(answer, fmt).check == check


def test_a_schema_mismatch_says_where():
    finding = check_chat_answer(_answer('{"city": 7}'), SCHEMA)
    assert "at city" in finding.message and "string" in finding.message
    assert finding.correctable and not finding.ok


def test_a_broken_schema_holds_nothing_to_it():
    broken = {"type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}}
    assert check_chat_answer(_answer('{"a": 1}'), broken).check == "ok"


def test_the_header_is_one_ascii_line_of_bounded_length():
    finding = check_chat_answer(_answer('{"city": "' + "é" * 500 + '"'), {"type": "json_object"})
    header = finding.header()
    assert header.isascii() and "\n" not in header and len(header) < 400


def test_the_correction_keeps_the_conversation_and_names_the_error():
    body = {"model": "m", "messages": MSG, "temperature": 0}
    fixed = correction(body, "Sure! {}", Finding("invalid_json", "not JSON: line 1"))
    assert fixed["messages"][:1] == MSG and fixed["temperature"] == 0
    assert fixed["messages"][1] == {"role": "assistant", "content": "Sure! {}"}
    assert "not JSON: line 1" in fixed["messages"][2]["content"]
    assert body["messages"] == MSG  # the caller's body untouched


@pytest.mark.parametrize("value", ["retry", " Report ", "off"])
def test_the_header_modes(value):
    assert requested_mode({"x-forge-validate": value}) == value.strip().lower()


def test_an_unknown_mode_is_a_400_naming_the_header():
    assert requested_mode({}) is None
    with pytest.raises(InvalidRequest) as raised:
        requested_mode({"x-forge-validate": "always"})
    assert raised.value.param == "x-forge-validate"


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


async def _chat(gw, model, validate=None, **params):
    headers = {} if validate is None else {"x-forge-validate": validate}
    raw = await gw.sdk().chat.completions.with_raw_response.create(
        model=model, messages=MSG, extra_headers=headers, **params
    )
    return raw.headers.get("x-forge-validation"), raw.parse()


async def test_a_valid_json_answer_is_reported_ok(gw):
    header, completion = await _chat(gw, "gpt-test", response_format={"type": "json_object"})
    assert header == "ok"
    assert json.loads(completion.choices[0].message.content)["answer"].startswith("alpha")
    assert [r["validation"] for r in await usage_rows(gw)] == ["ok"]


async def test_a_cut_short_answer_is_reported_truncated(gw):
    header, completion = await _chat(gw, "gpt-test", max_completion_tokens=2)
    assert completion.choices[0].finish_reason == "length"
    assert header.startswith("truncated")
    assert [r["validation"] for r in await usage_rows(gw)] == ["truncated"]


async def test_invalid_json_is_reported_and_passed_on_as_it_came(gw, fake_openai):
    before = len(fake_openai.requests)
    header, completion = await _chat(gw, "sloppy-json", response_format={"type": "json_object"})
    assert header.startswith("invalid_json; not JSON")
    assert completion.choices[0].message.content.startswith("Sure! {")
    assert len(fake_openai.requests) == before + 1  # no retry unless asked
    assert [r["validation"] for r in await usage_rows(gw)] == ["invalid_json"]


async def test_asked_to_retry_the_corrected_answer_is_sent_and_both_calls_count(gw, fake_openai):
    before = len(fake_openai.requests)
    header, completion = await _chat(
        gw, "sloppy-json", "retry", response_format={"type": "json_object"}
    )
    assert header.startswith("corrected; not JSON")
    assert json.loads(completion.choices[0].message.content)["answer"]
    first, second = (r["body"] for r in fake_openai.requests[before:])
    assert first["messages"] == MSG
    assert second["messages"][:1] == MSG and second["messages"][1]["content"].startswith("Sure!")
    assert "not valid" in second["messages"][2]["content"]
    assert second["response_format"] == {"type": "json_object"}
    (row,) = await usage_rows(gw)
    assert row["validation"] == "corrected" and row["status"] == "ok"
    assert row["completion_tokens"] == 2 * completion.usage.completion_tokens
    assert row["prompt_tokens"] > completion.usage.prompt_tokens  # the second's, and more


async def test_a_schema_is_held_to(gw):
    header, completion = await _chat(gw, "gpt-test", "retry", response_format=SCHEMA)
    assert header == "ok" and "city" in json.loads(completion.choices[0].message.content)


async def test_a_retry_that_fails_again_sends_the_first_answer(gw, fake_openai):
    """sloppy-json ignores schemas: its corrected answer is JSON, not the schema's."""
    before = len(fake_openai.requests)
    header, completion = await _chat(gw, "sloppy-json", "retry", response_format=SCHEMA)
    assert header.startswith("invalid_json")
    assert len(fake_openai.requests) == before + 2
    assert completion.choices[0].message.content.startswith("Sure! ")  # the first answer
    (row,) = await usage_rows(gw)
    assert row["validation"] == "invalid_json"
    assert row["completion_tokens"] == 2 * completion.usage.completion_tokens


async def test_off_checks_nothing(gw):
    header, _ = await _chat(gw, "gpt-test", "off", max_completion_tokens=2)
    assert header is None
    assert [r["validation"] for r in await usage_rows(gw)] == [None]


async def _stream(gw, validate=None, model="gpt-test", **params) -> str:
    headers = {} if validate is None else {"x-forge-validate": validate}
    raw = await gw.sdk().chat.completions.with_raw_response.create(
        model=model, messages=MSG, stream=True, extra_headers=headers, **params
    )
    assert "x-forge-validation" not in raw.headers  # sent before the answer existed
    text = ""
    async for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    return text


async def test_streams_are_checked_by_how_they_end(gw):
    await _stream(gw)
    await _stream(gw, max_completion_tokens=2)
    await _stream(gw, "off", max_completion_tokens=2)
    rows = sorted(await usage_rows(gw), key=lambda r: r["created_at"])
    assert [r["validation"] for r in rows] == ["ok", "truncated", None]


@pytest.mark.parametrize(
    ("finish", "chunks", "check"),
    [
        ("stop", 8, "ok"),
        ("tool_calls", 1, "ok"),
        ("length", 8, "truncated"),
        ("stop", 0, "empty"),
        (None, 0, "empty"),
        ("content_filter", 3, "refused"),
    ],
)
def test_stream_checks(finish, chunks, check):
    assert check_stream_end(finish, chunks).check == check


async def test_a_bad_validate_header_is_a_400(gw):
    with pytest.raises(openai.BadRequestError) as raised:
        await _chat(gw, "gpt-test", "sometimes")
    assert raised.value.body["param"] == "x-forge-validate"


async def test_a_streamed_answers_json_is_checked_when_it_ends(gw):
    """The text has gone out chunk by chunk: the finding is recorded, not retried."""
    as_json = {"type": "json_object"}
    assert json.loads(await _stream(gw, response_format=as_json))
    assert json.loads(await _stream(gw, response_format=SCHEMA))["city"]
    sloppy = await _stream(gw, model="sloppy-json", response_format=as_json)
    assert sloppy.startswith("Sure! ")
    await _stream(gw, "off", model="sloppy-json", response_format=as_json)
    rows = sorted(await usage_rows(gw), key=lambda r: r["created_at"])
    assert [r["validation"] for r in rows] == ["ok", "ok", "invalid_json", None]


@pytest.mark.parametrize(
    ("text", "fmt", "finish", "check"),
    [
        ('{"city": "Paris"}', SCHEMA, "stop", "ok"),
        ('{"town": "Paris"}', SCHEMA, "stop", "schema_mismatch"),
        ("Sure! {}", {"type": "json_object"}, "stop", "invalid_json"),
        ("Paris", None, "stop", "ok"),
        ('{"ci', {"type": "json_object"}, "length", "truncated"),
        ("", {"type": "json_object"}, "tool_calls", "ok"),
    ],
)
def test_stream_text_checks(text, fmt, finish, check):
    assert check_stream_end(finish, 3, text, fmt).check == check
