"""Streaming JSONL validation for /v1/files uploads: formats, line numbers, chunking."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest

from forge.files.validation import (
    MAX_ERRORS,
    FileCheck,
    JsonlValidator,
    Purpose,
    validate_jsonl,
)

USER = {"role": "user", "content": "What is the capital of France?"}
ASSISTANT = {"role": "assistant", "content": "Paris."}
CHAT = {"messages": [{"role": "system", "content": "Be brief."}, USER, ASSISTANT]}
PC = {"prompt": "2 + 2 =", "completion": " 4"}


def batch_line(custom_id: str = "req-1", url: str = "/v1/chat/completions") -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": [USER]}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(*rows: Any, sep: bytes = b"\n") -> bytes:
    """Rows as JSONL; a bytes row goes in verbatim (blank lines, broken JSON)."""
    return sep.join(r if isinstance(r, bytes) else orjson.dumps(r) for r in rows) + sep


def errors(check: FileCheck) -> list[tuple[int, str]]:
    return [(e.line, e.message) for e in check.errors]


def fed(purpose: Purpose, data: bytes, sizes: list[int], **kwargs: Any) -> FileCheck:
    """Feed ``data`` in chunks of the given sizes (cycled)."""
    validator = JsonlValidator(purpose, **kwargs)
    pos = i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        validator.feed(data[pos : pos + size])
        pos, i = pos + size, i + 1
    return validator.finish()


# -- valid files ---------------------------------------------------------------------------


def test_valid_chat_file_with_tools_images_and_weights():
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    tool_use = {
        "messages": [
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": None, "tool_calls": calls, "weight": 0},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "assistant", "content": "18C and sunny.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}],
        "parallel_tool_calls": False,
    }
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    vision = {"messages": [{"role": "user", "content": [image]}, ASSISTANT]}
    legacy = {
        "messages": [
            USER,
            {"role": "assistant", "function_call": {"name": "weather", "arguments": "{}"}},
        ],
        "functions": [{"name": "weather"}],
    }
    check = validate_jsonl("fine-tune", jsonl(CHAT, b"", tool_use, vision, legacy))
    assert check.ok, errors(check)
    assert (check.format, check.lines, check.endpoint, check.error_count) == ("chat", 4, None, 0)


def test_valid_prompt_completion_file():
    check = validate_jsonl("fine-tune", jsonl(PC, PC, {"prompt": "", "completion": "x"}))
    assert check.ok and check.format == "prompt_completion" and check.lines == 3


def test_valid_batch_file_reports_its_endpoint():
    data = jsonl(*(batch_line(f"req-{i}", "/v1/embeddings") for i in range(3)))
    check = validate_jsonl("batch", data)
    assert check.ok and check.format == "batch" and check.endpoint == "/v1/embeddings"
    assert check.lines == 3


def test_crlf_and_a_missing_final_newline_are_fine():
    data = jsonl(CHAT, b"  ", CHAT, sep=b"\r\n") + orjson.dumps(CHAT)
    check = validate_jsonl("fine-tune", data)
    assert check.ok and check.lines == 3
    bad = jsonl(CHAT, b"", b"{nope", sep=b"\r\n")
    assert errors(validate_jsonl("fine-tune", bad))[0][0] == 3


def test_a_byte_order_mark_on_the_first_line_is_tolerated():
    assert validate_jsonl("fine-tune", b"\xef\xbb\xbf" + jsonl(CHAT)).ok


# -- line-level errors ---------------------------------------------------------------------


def test_blank_lines_count_for_line_numbers_but_not_as_lines():
    data = jsonl(CHAT, b"", b"   \t", b"[1, 2]", CHAT)
    check = validate_jsonl("fine-tune", data)
    assert errors(check) == [(4, "line is not a JSON object (got array)")]
    assert check.lines == 3 and check.format == "chat"


def test_invalid_json_and_invalid_utf8_name_the_line():
    data = jsonl(CHAT, b'{"messages": [}', b'{"prompt": "caf\xe9"}', b"\xff")
    assert errors(validate_jsonl("fine-tune", data)) == [
        (2, "invalid JSON: unexpected character, expected a JSON value (column 15)"),
        (3, "not valid UTF-8 (byte 16)"),
        (4, "not valid UTF-8 (byte 1)"),
    ]


def test_an_empty_file_and_a_file_of_blank_lines_are_rejected():
    for data in (b"", b"\n \r\n\n"):
        check = validate_jsonl("fine-tune", data)
        assert errors(check) == [(1, "the file is empty")] and check.format is None


def test_a_file_with_no_valid_line_has_no_format():
    check = validate_jsonl("fine-tune", jsonl({"messages": []}, PC | {"completion": 1}))
    assert check.format is None and check.error_count == 2


def _chat_with(*messages: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"messages": list(messages), **top}


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

CHAT_ERRORS = [
    (
        _chat_with(USER, {"role": "bot", "content": "hi"}),
        "messages[1].role: 'bot' is not one of system, developer, user, assistant, tool",
    ),
    (_chat_with(USER, {"content": "hi"}), "messages[1].role: missing"),
    ({"messages": []}, "messages: must be a non-empty list"),
    ({"messages": "hi"}, "messages: must be a non-empty list"),
    (_chat_with(USER, "hi"), "messages[1]: must be an object"),
    (_chat_with(USER, ASSISTANT | {"weight": 2}), "messages[1].weight: must be 0 or 1"),
    (_chat_with(USER, ASSISTANT | {"weight": True}), "messages[1].weight: must be 0 or 1"),
    (
        _chat_with(USER | {"weight": 1}, ASSISTANT),
        "messages[0].weight: only assistant messages have one",
    ),
    (
        _chat_with(USER, ASSISTANT | {"weight": 0}),
        "nothing to train on: no assistant message with weight 1",
    ),
    (_chat_with(USER), "nothing to train on: no assistant message with weight 1"),
    (_chat_with({"role": "user"}, ASSISTANT), "messages[0].content: missing"),
    (
        _chat_with(USER, {"role": "assistant", "content": None}),
        "messages[1].content: must not be null (unless it has tool_calls)",
    ),
    (
        _chat_with(USER, {"role": "assistant", "content": 3}),
        "messages[1].content: must be a string or a non-empty list of parts",
    ),
    (
        _chat_with({"role": "user", "content": [{"type": "audio"}]}, ASSISTANT),
        "messages[0].content[0].type: 'audio' is not one of text, image_url",
    ),
    (
        _chat_with({"role": "user", "content": [{"type": "text", "text": 1}]}, ASSISTANT),
        "messages[0].content[0].text: must be a string",
    ),
    (
        _chat_with(
            USER,
            {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
        ),
        "messages[1].content[0]: an assistant message cannot contain images",
    ),
    (
        _chat_with(USER, {"role": "assistant", "tool_calls": [CALL | {"type": "tool"}]}),
        'messages[1].tool_calls[0].type: must be "function"',
    ),
    (
        _chat_with(USER, {"role": "assistant", "tool_calls": [CALL | {"id": ""}]}),
        "messages[1].tool_calls[0].id: must be a non-empty string",
    ),
    (
        _chat_with(
            USER,
            {"role": "assistant", "tool_calls": [CALL | {"function": {"name": "f"}}]},
        ),
        "messages[1].tool_calls[0].function.arguments: must be a string (JSON-encoded)",
    ),
    (
        _chat_with(
            USER,
            {"role": "assistant", "tool_calls": [CALL | {"function": {"arguments": "{}"}}]},
        ),
        "messages[1].tool_calls[0].function.name: must be a non-empty string",
    ),
    (
        _chat_with(USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool"}),
        "messages[2].tool_call_id: must be a non-empty string",
    ),
    (
        _chat_with(
            USER,
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c2", "content": "x"},
        ),
        "messages[2].tool_call_id: 'c2' answers no tool call of an earlier assistant message",
    ),
    (
        _chat_with(USER | {"tool_calls": [CALL]}, ASSISTANT),
        "messages[0].tool_calls: only assistant messages have one",
    ),
    (_chat_with(USER, ASSISTANT, tool_choice="auto"), "unknown key 'tool_choice'"),
    (
        _chat_with(USER, ASSISTANT, tools=[{"type": "function", "function": {}}]),
        "tools[0].function.name: must be a non-empty string",
    ),
    (
        _chat_with(USER, ASSISTANT, tools=[{"type": "web_search"}]),
        'tools[0].type: must be "function"',
    ),
    (_chat_with(USER, ASSISTANT, functions=[{}]), "functions[0].name: must be a non-empty string"),
    (
        _chat_with(USER, ASSISTANT, parallel_tool_calls="yes"),
        "parallel_tool_calls: must be true or false",
    ),
    ({"text": "hi"}, 'expected "messages" (chat format) or "prompt" and "completion"'),
]


@pytest.mark.parametrize(("example", "message"), CHAT_ERRORS)
def test_each_chat_error_names_its_line_and_path(example, message):
    check = validate_jsonl("fine-tune", jsonl(CHAT, b"", example, CHAT))
    assert errors(check) == [(3, message)]
    assert check.lines == 3 and not check.ok


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ({"prompt": "x"}, "completion: missing"),
        ({"prompt": "x", "completion": ["y"]}, "completion: must be a string"),
        (PC | {"weight": 1}, "unknown key 'weight'"),
    ],
)
def test_prompt_completion_errors(example, message):
    check = validate_jsonl("fine-tune", jsonl(PC, example))
    assert errors(check) == [(2, message)]


def test_the_first_valid_line_fixes_the_format():
    data = jsonl({"messages": []}, PC, CHAT, PC)
    check = validate_jsonl("fine-tune", data)
    assert check.format == "prompt_completion"
    assert errors(check) == [
        (1, "messages: must be a non-empty list"),
        (3, "a chat example, but line 2 set the file's format to prompt/completion"),
    ]


# -- batch ---------------------------------------------------------------------------------

BATCH_ERRORS = [
    (batch_line() | {"method": "GET"}, "method: 'GET' is not POST"),
    ({k: v for k, v in batch_line().items() if k != "method"}, "method: missing"),
    (
        batch_line(url="/v1/images"),
        "url: '/v1/images' is not one of /v1/chat/completions, /v1/completions, "
        "/v1/embeddings, /v1/responses",
    ),
    (batch_line() | {"body": "x"}, "body: must be an object"),
    (batch_line() | {"body": {"input": "x"}}, "body.model: must be a non-empty string"),
    (batch_line(""), "custom_id: must be a non-empty string"),
    (batch_line() | {"custom_id": 7}, "custom_id: must be a non-empty string"),
    (batch_line("x" * 513), "custom_id: longer than 512 characters"),
    (batch_line() | {"timeout": 5}, "unknown key 'timeout'"),
]


@pytest.mark.parametrize(("example", "message"), BATCH_ERRORS)
def test_each_batch_error_names_its_line(example, message):
    check = validate_jsonl("batch", jsonl(batch_line("first"), b"", example))
    assert errors(check) == [(3, message)]


def test_batch_custom_id_of_512_characters_is_allowed():
    assert validate_jsonl("batch", jsonl(batch_line("x" * 512))).ok


def test_batch_duplicate_ids_name_the_first_use():
    data = jsonl(batch_line("a"), batch_line("b"), b"", batch_line("a"), batch_line("b"))
    assert errors(validate_jsonl("batch", data)) == [
        (4, "custom_id: 'a' already used on line 1"),
        (5, "custom_id: 'b' already used on line 2"),
    ]


def test_batch_lines_must_share_one_url():
    data = jsonl(batch_line("a"), batch_line("b", "/v1/embeddings"), batch_line("c"))
    check = validate_jsonl("batch", data)
    assert check.endpoint == "/v1/chat/completions"
    assert errors(check) == [
        (2, "url: '/v1/embeddings' differs from '/v1/chat/completions' used from line 1")
    ]


def test_batch_defaults_to_openais_50000_line_limit():
    line = orjson.dumps(batch_line("{}"))
    data = b"".join(line.replace(b'"{}"', b'"%d"' % i) + b"\n" for i in range(50_002))
    check = validate_jsonl("batch", data)
    assert errors(check) == [(50_001, "more than 50,000 lines (the limit)")]
    assert check.lines == 50_002 and check.error_count == 1


def test_max_lines_names_the_limit_once():
    data = jsonl(CHAT, b"", CHAT, CHAT, CHAT)
    check = fed("fine-tune", data, [7], max_lines=2)
    assert errors(check) == [(4, "more than 2 lines (the limit)")] and check.lines == 4


# -- streaming -----------------------------------------------------------------------------


def test_an_over_long_line_is_an_error_and_is_not_buffered():
    limit = len(orjson.dumps(CHAT))  # so the CRLF lines at the end are exactly at the limit
    long_line = orjson.dumps(_chat_with({"role": "user", "content": "x" * 3 * limit}, ASSISTANT))
    data = jsonl(CHAT, long_line, CHAT) + b"\r\n".join([orjson.dumps(CHAT)] * 2) + b"\r\n"
    validator = JsonlValidator("fine-tune", max_line_bytes=limit)
    for start in range(0, len(data), 5):
        validator.feed(data[start : start + 5])
        assert len(validator._buf) <= limit + 1
    check = validator.finish()
    assert errors(check) == [(2, f"line is longer than {limit:,} bytes")]
    assert check.lines == 5 and check.format == "chat"
    one_chunk = validate_jsonl("fine-tune", data)
    assert one_chunk.ok  # the default limit is 8 MiB
    unterminated = fed("fine-tune", jsonl(CHAT) + long_line, [limit], max_line_bytes=limit)
    assert errors(unterminated) == [(2, f"line is longer than {limit:,} bytes")]


def _messy_file() -> bytes:
    """Valid and invalid lines, CRLF, blank lines and multi-byte characters to split."""
    accented = {"messages": [{"role": "user", "content": "Ça va? 日本語 🙂"}, ASSISTANT]}
    return (
        jsonl(CHAT, b"", accented, sep=b"\r\n")
        + jsonl(b'{"messages": [}', b"\xe9t\xe9", PC, b"\t", CHAT | {"x": 1}, accented)
        + orjson.dumps(CHAT)
    )


def test_any_chunking_gives_the_same_result():
    data = _messy_file()
    whole = validate_jsonl("fine-tune", data)
    assert [e.line for e in whole.errors] == [4, 5, 6, 8] and whole.lines == 8
    assert fed("fine-tune", data, [1]) == whole
    rng = random.Random(7)
    for _ in range(50):
        sizes = [rng.randint(1, 40) for _ in range(20)]
        assert fed("fine-tune", data, sizes) == whole
    batch = jsonl(batch_line("a"), b"", b"{", batch_line("a"), sep=b"\r\n")
    assert fed("batch", batch, [1]) == validate_jsonl("batch", batch)


def test_errors_are_capped_but_all_are_counted():
    data = jsonl(CHAT, *([b"[]"] * 30))
    check = validate_jsonl("fine-tune", data)
    assert len(check.errors) == MAX_ERRORS and check.error_count == 30 and not check.ok
    assert check.errors[-1].line == MAX_ERRORS + 1


def test_feed_after_finish_is_refused():
    validator = JsonlValidator("batch")
    validator.feed(jsonl(batch_line()))
    assert validator.finish().ok
    with pytest.raises(RuntimeError):
        validator.feed(b"{}\n")


def test_throughput_on_typical_chat_lines():
    example = {
        "messages": [
            {"role": "system", "content": "You are a concise, helpful support assistant. " * 3},
            {"role": "user", "content": "My order has not arrived yet; what should I do? " * 4},
            {"role": "assistant", "content": "Sorry to hear that. Please check the tracking " * 6},
        ]
    }
    line = orjson.dumps(example) + b"\n"
    data = line * (64 * 2**20 // len(line))
    chunk = 2**20
    validator = JsonlValidator("fine-tune")
    started = time.perf_counter()
    for start in range(0, len(data), chunk):
        validator.feed(data[start : start + chunk])
    check = validator.finish()
    elapsed = time.perf_counter() - started
    assert check.ok
    print(
        f"\nfile validation: {len(data) / 2**20 / elapsed:.0f} MB/s "
        f"({len(line)}-byte chat lines, {check.lines:,} lines)"
    )
