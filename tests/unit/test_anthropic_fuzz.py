"""Fuzzing the Anthropic-compatible ingress (`/v1/messages`, `/v1/messages/count_tokens`)
as the OpenAI routes are fuzzed: Hypothesis builds valid Anthropic bodies, breaks them one
field at a time, and makes up bodies of its own; each goes to the real gateway app,
in-process, with models on the fake OpenAI upstream and, through the Anthropic provider,
on the strict fake Anthropic API. No body may cause a 5xx; every refusal is a 4xx in
Anthropic's error shape; every valid body is answered, so a valid body that the double
translation (Anthropic to OpenAI to Anthropic) turns into one Anthropic refuses fails."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from forge.protocol.anthropic import MessagesRequest
from tests.unit.harness import in_process_gateway, platform_config

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
    "RU5ErkJggg=="
)
MODELS = ("gpt-test", "claude-test")  # the fake OpenAI upstream; the strict fake Anthropic
STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"}


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture
async def gw(fake_openai, fake_anthropic, sqlite_engine):
    config = platform_config(fake_openai.base_url, fake_anthropic.url)
    async with in_process_gateway(config, sqlite_engine) as h:
        yield h


async def post(gw, path: str, body: Any) -> Any:
    """The body as JSON text (the standard library's, so that NaN and 2**70 go out too)."""
    return await gw.http.post(
        path,
        content=json.dumps(body).encode(),
        headers={"x-api-key": gw.user_key, "content-type": "application/json"},
    )


def assert_anthropic_answer(resp: Any) -> None:
    """Never a 5xx; a refusal is a 4xx in Anthropic's error shape."""
    event(f"HTTP {resp.status_code}")
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        body = resp.json()
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        assert isinstance(body["error"]["type"], str) and body["error"]["message"], body
        if resp.status_code == 400:
            assert body["error"]["type"] == "invalid_request_error", body


# ----------------------------------------------------------------------------- valid bodies

text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12
).filter(str.strip)
names = st.lists(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), max_size=3, unique=True)


def text_block(draw) -> dict[str, Any]:
    return {"type": "text", "text": draw(text)}


def user_block(draw) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "text", "image", "url_image", "document", "content_doc"]))
    if kind == "image":
        source = {"type": "base64", "media_type": "image/png", "data": PNG}
        return {"type": "image", "source": source}
    if kind == "url_image":
        return {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.png"}}
    if kind == "document":
        source = {"type": "text", "media_type": "text/plain", "data": draw(text)}
        return {"type": "document", "source": source, "title": draw(st.none() | text)}
    if kind == "content_doc":
        return {"type": "document", "source": {"type": "content", "content": draw(text)}}
    return text_block(draw)


def tool_result(draw, tool_use_id: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    content = draw(st.sampled_from(["none", "str", "blocks"]))
    if content == "str":
        block["content"] = draw(text)
    elif content == "blocks":
        block["content"] = [text_block(draw) for _ in range(draw(st.integers(1, 2)))]
    if draw(st.booleans()):
        block["is_error"] = draw(st.booleans())
    return block


@st.composite
def conversations(draw, tools: list[str]) -> list[dict[str, Any]]:
    """Alternating turns that follow Anthropic's rules: tool uses answered first thing in
    the next user turn, a final assistant turn (a prefill) without trailing whitespace."""
    messages: list[dict[str, Any]] = []
    pending: list[str] = []
    for turn in range(draw(st.integers(1, 3))):
        results = [tool_result(draw, i) for i in pending]
        extra = [user_block(draw) for _ in range(draw(st.integers(0 if results else 1, 2)))]
        if not results and len(extra) == 1 and extra[0]["type"] == "text" and draw(st.booleans()):
            messages.append({"role": "user", "content": extra[0]["text"]})
        else:
            messages.append({"role": "user", "content": results + extra})
        pending = []
        if draw(st.booleans()):
            break
        blocks: list[dict[str, Any]] = []
        if draw(st.booleans()):
            blocks.append({"type": "thinking", "thinking": draw(text), "signature": "sig"})
        blocks += [text_block(draw) for _ in range(draw(st.integers(0, 2)))]
        for j in range(draw(st.integers(0, 2)) if tools else 0):
            pending.append(f"toolu_{turn}_{j}")
            args = draw(st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True), text))
            blocks.append(
                {
                    "type": "tool_use",
                    "id": pending[-1],
                    "name": draw(st.sampled_from(tools)),
                    "input": args,
                }
            )
        if not blocks:
            blocks.append(text_block(draw))
        messages.append({"role": "assistant", "content": blocks})
    if pending:
        messages.append({"role": "user", "content": [tool_result(draw, i) for i in pending]})
    final = messages[-1]
    if final["role"] == "assistant" and final["content"][-1]["type"] == "text":
        final["content"][-1]["text"] = final["content"][-1]["text"].rstrip() or "ok"
    return messages


@st.composite
def valid_bodies(draw, counting: bool = False) -> dict[str, Any]:
    tools = draw(names)
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(MODELS)),
        "messages": draw(conversations(tools)),
    }
    if not counting:
        body["max_tokens"] = draw(st.integers(1, 64))
    system = draw(st.sampled_from(["none", "str", "blocks"]))
    if system == "str":
        body["system"] = draw(text)
    elif system == "blocks":
        body["system"] = [text_block(draw) for _ in range(draw(st.integers(1, 2)))]
    if tools:
        body["tools"] = [
            {
                "name": name,
                "description": draw(text),
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            }
            for name in tools
        ]
        choice = draw(st.sampled_from(["absent", "auto", "any", "tool", "none"]))
        if choice == "tool":
            body["tool_choice"] = {"type": "tool", "name": draw(st.sampled_from(tools))}
        elif choice != "absent":
            body["tool_choice"] = {"type": choice}
    if counting:
        return body
    optional = {
        "stop_sequences": st.lists(text, max_size=4),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(0, 100),
        "metadata": st.fixed_dictionaries({"user_id": text}),
        "stream": st.booleans(),
        "service_tier": st.just("auto"),  # a field the gateway does not read
    }
    for field, strategy in optional.items():
        if draw(st.booleans()):
            body[field] = draw(strategy)
    return body


def events(raw: str) -> list[dict[str, Any]]:
    return [
        json.loads(block.split("\ndata: ", 1)[1])
        for block in raw.split("\n\n")
        if "data: " in block
    ]


@fuzz(250)
@given(body=valid_bodies())
async def test_valid_bodies_are_answered(gw, body):
    resp = await post(gw, "/v1/messages", body)
    assert resp.status_code == 200, (resp.text, body)
    if body.get("stream"):
        kinds = [e["type"] for e in events(resp.text)]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
        return
    message = resp.json()
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == body["model"] and message["stop_reason"] in STOP_REASONS
    assert isinstance(message["usage"]["output_tokens"], int)


@fuzz(150)
@given(body=valid_bodies(counting=True))
async def test_valid_bodies_are_counted(gw, body):
    resp = await post(gw, "/v1/messages/count_tokens", body)
    assert resp.status_code == 200, (resp.text, body)
    assert resp.json()["input_tokens"] >= 1


# ----------------------------------------------------------------------------- hostile bodies

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # NaN and infinities too: they must be refused as JSON
    | st.text(max_size=8)
    | st.sampled_from(["text", "image", "tool_use", "tool_result", "base64", "url", "user"])
)
hostile = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location inside a JSON value, the value itself first."""
    out = [at]
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths(item, (*at, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += paths(item, (*at, i))
    return out


@st.composite
def broken(draw, counting: bool = False) -> dict[str, Any]:
    """A valid body with one location replaced by something hostile, removed, or given an
    extra junk entry: the bugs live one field deep, where the outer shape still passes."""
    body = copy.deepcopy(draw(valid_bodies(counting)))
    where = draw(st.sampled_from(paths(body)[1:]))
    *parent_path, last = where
    parent: Any = body
    for part in parent_path:
        parent = parent[part]
    action = draw(st.sampled_from(["replace", "replace", "delete", "grow"]))
    if action == "replace":
        parent[last] = draw(hostile)
    elif action == "delete":
        del parent[last]
    elif isinstance(parent[last], list):
        parent[last].append(draw(hostile))
    elif isinstance(parent[last], dict):
        parent[last][draw(st.sampled_from(["type", "text", "source", "content", "x"]))] = draw(
            hostile
        )
    else:
        parent[last] = [parent[last], draw(hostile)]
    return body


KNOWN = (
    "model",
    "messages",
    "max_tokens",
    "system",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
)
made_up = (
    st.fixed_dictionaries(
        {"model": st.sampled_from(MODELS) | hostile},
        optional={key: hostile for key in KNOWN[1:]},
    )
    | hostile
)


def accepted(body: Any, model: type[BaseModel]) -> bool:
    """Whether the gateway's validation lets the body through, as the gateway parses it."""
    try:
        model.model_validate(orjson.loads(json.dumps(body)))
    except (orjson.JSONDecodeError, ValidationError):
        return False
    return True


@fuzz(1000)
@given(body=broken())
async def test_broken_messages_bodies_never_5xx(gw, body):
    resp = await post(gw, "/v1/messages", body)
    assert_anthropic_answer(resp)
    if accepted(body, MessagesRequest):
        # Whatever passes validation is served: no refusal from deeper in (the translation,
        # or the strict fake Anthropic behind claude-test), only a 404 for a broken name.
        assert resp.status_code in (200, 404), (resp.text, body)


@fuzz(400)
@given(body=made_up)
async def test_made_up_messages_bodies_never_5xx(gw, body):
    assert_anthropic_answer(await post(gw, "/v1/messages", body))


@fuzz(400)
@given(body=broken(counting=True) | made_up)
async def test_broken_count_tokens_bodies_never_5xx(gw, body):
    assert_anthropic_answer(await post(gw, "/v1/messages/count_tokens", body))
