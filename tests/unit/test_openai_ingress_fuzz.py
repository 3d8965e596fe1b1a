"""Fuzzing the OpenAI chat route (`POST /v1/chat/completions`) for every provider type a
model can sit behind: Hypothesis builds valid chat bodies, breaks them one field at a
time, and makes up bodies of its own; each goes to the real gateway app, in-process, for
a model on the fake OpenAI upstream, the fake Anthropic API, the fake Gemini API and the
fake Ollama server. No body may cause a 5xx; every refusal is a 4xx in OpenAI's error
shape. Whatever the gateway's validation accepts, each translator either translates or
refuses with a 400 naming the field, checked on the translators themselves."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from forge.config import PlatformConfig
from forge.errors import InvalidRequest
from forge.protocol.openai import ChatCompletionRequest
from forge.translate.anthropic import to_anthropic_request
from forge.translate.gemini import to_gemini_request
from forge.translate.ollama import to_ollama_chat
from tests.unit.harness import in_process_gateway, platform_config

PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
WAV = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA="
PDF = "data:application/pdf;base64,JVBERi0xLjQKJcOkw7zDtsOfCg=="
# One model per provider type: the fake OpenAI upstream, the strict fake Anthropic API,
# the fake Gemini API (which refuses unknown fields) and the fake Ollama server.
MODELS = ("gpt-test", "claude-test", "gemini-test", "ollama-test")


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def config(openai_url: str, anthropic_url: str, gemini_url: str, ollama_url: str) -> PlatformConfig:
    """The harness's platform (OpenAI and Anthropic fakes) plus a Gemini and an Ollama model."""
    base = platform_config(openai_url, anthropic_url).model_dump(mode="json", exclude_unset=True)
    base["providers"] += [
        {
            "name": "gem",
            "type": "gemini",
            "base_url": gemini_url,
            "api_key_env": "FAKE_GEMINI_KEY",
            "timeout_s": 2.0,
        },
        {"name": "local", "type": "ollama", "base_url": ollama_url, "timeout_s": 2.0},
    ]
    base["models"] += [
        {"name": "gemini-test", "provider": "gem", "model": "gemini-2.5-flash"},
        {"name": "ollama-test", "provider": "local", "model": "llama3.2"},
    ]
    return PlatformConfig.model_validate(base)


@pytest.fixture
async def gw(fake_openai, fake_anthropic, fake_gemini, fake_ollama, sqlite_engine):
    cfg = config(fake_openai.base_url, fake_anthropic.url, fake_gemini.url, fake_ollama.url)
    async with in_process_gateway(cfg, sqlite_engine) as h:
        yield h


async def post(gw, body: Any) -> Any:
    """The body as JSON text (the standard library's, so that NaN and 2**70 go out too)."""
    return await gw.http.post(
        "/v1/chat/completions",
        content=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {gw.user_key}", "content-type": "application/json"},
    )


def assert_openai_answer(resp: Any, body: Any) -> None:
    """Never a 5xx; a refusal is a 4xx in OpenAI's error shape."""
    model = body.get("model") if isinstance(body, dict) else None
    event(f"{model if model in MODELS else 'no model'}: HTTP {resp.status_code}")
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        payload = resp.json()
        assert set(payload) == {"error"}, payload
        error = payload["error"]
        assert set(error) == {"message", "type", "param", "code"}, payload
        assert isinstance(error["message"], str) and error["message"], payload
        assert isinstance(error["type"], str) and error["type"], payload
        assert error["param"] is None or isinstance(error["param"], str), payload
        assert "literal[" not in (error["param"] or ""), payload  # a union's tag is no field
        assert error["code"] is None or isinstance(error["code"], str), payload
        if resp.status_code == 400:
            assert error["type"] == "invalid_request_error", payload


# ----------------------------------------------------------------------------- hostile JSON

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # NaN and infinities too: they must be refused as JSON
    | st.text(max_size=8)
    | st.sampled_from(
        ["text", "image_url", "function", "auto", "json_schema", "user", "tool", PNG, "{}"]
    )
)
hostile = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
# Names a translator might read where OpenAI's schema is open (unknown fields are allowed
# and forwarded): its own and other providers' extensions.
OPEN_KEYS = [
    "type",
    "name",
    "function",
    "content",
    "text",
    "url",
    "id",
    "extra_content",
    "google",
    "thought_signature",
    "tool_call_id",
    "arguments",
    "schema",
    "x",
]
hostile_object = st.dictionaries(st.sampled_from(OPEN_KEYS) | st.text(max_size=4), hostile)


def either(draw, wild: bool, tame: Any) -> Any:
    """``tame``, or, in the open places of a wild body, now and then hostile JSON."""
    return draw(hostile) if wild and draw(st.integers(0, 2)) == 0 else tame


# ----------------------------------------------------------------------------- valid bodies

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
words = text.filter(str.strip)
names = st.lists(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), max_size=3, unique=True)
tool_ids = st.from_regex(r"call_[a-z0-9]{1,8}", fullmatch=True)


def text_part(draw) -> dict[str, Any]:
    return {"type": "text", "text": draw(text)}


def user_part(draw) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text"] * 6 + ["image", "link", "audio", "file"]))
    if kind == "image":
        image: dict[str, Any] = {"url": PNG}
        if draw(st.booleans()):
            image["detail"] = draw(st.sampled_from(["auto", "low", "high"]))
        return {"type": "image_url", "image_url": image}
    if kind == "link":
        return {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}
    if kind == "audio":
        audio = {"data": WAV, "format": draw(st.sampled_from(["wav", "mp3"]))}
        return {"type": "input_audio", "input_audio": audio}
    if kind == "file":
        file = draw(
            st.sampled_from(
                [
                    {"file_data": PDF, "filename": "a.pdf"},
                    {"file_data": PDF},
                    {"file_id": "file-abc"},
                    {"filename": "a.pdf"},
                ]
            )
        )
        return {"type": "file", "file": file}
    return text_part(draw)


def content(draw, part) -> Any:
    if draw(st.booleans()):
        return draw(text)
    return [part(draw) for _ in range(draw(st.integers(1, 3)))]


def assistant_part(draw) -> dict[str, Any]:
    if draw(st.integers(0, 3)) == 0:
        return {"type": "refusal", "refusal": draw(text)}
    return text_part(draw)


def tool_call(draw, tools: list[str], wild: bool) -> dict[str, Any]:
    args = draw(st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True), text))
    call = {
        "id": draw(tool_ids),
        "type": "function",
        "function": {
            "name": draw(st.sampled_from(tools)),
            "arguments": draw(st.sampled_from([json.dumps(args), "", "{}"])),
        },
    }
    if draw(st.integers(0, 2)) == 0:  # Gemini's thought signature, as its OpenAI layer sends it
        signature = {"google": {"thought_signature": either(draw, wild, "c2ln")}}
        call["extra_content"] = either(draw, wild, signature)
    return call


@st.composite
def conversations(draw, tools: list[str], wild: bool = False) -> list[dict[str, Any]]:
    """Turns in any order, as OpenAI's schema allows; tool calls mostly answered."""
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        roles = ["system", "developer", "user", "user", "assistant", "assistant", "tool"]
        role = draw(st.sampled_from([*roles * 4, "function"]))
        msg: dict[str, Any] = {"role": role}
        if role in ("system", "developer"):
            msg["content"] = content(draw, text_part)
        elif role == "user":
            msg["content"] = content(draw, user_part)
        elif role == "assistant":
            if draw(st.booleans()):
                msg["content"] = (
                    draw(st.none()) if draw(st.booleans()) else content(draw, assistant_part)
                )
            count = draw(st.integers(0, 2)) if tools else 0
            calls = [tool_call(draw, tools, wild) for _ in range(count)]
            if calls or draw(st.booleans()):
                msg["tool_calls"] = calls
            if draw(st.integers(0, 5)) == 0:
                msg["refusal"] = draw(text)
        elif role == "tool":
            previous = [c["id"] for m in messages for c in m.get("tool_calls") or ()]
            msg["tool_call_id"] = draw(st.sampled_from(previous) if previous else tool_ids)
            msg["content"] = content(draw, text_part)
            if draw(st.integers(0, 2)) == 0:  # not OpenAI's field, but Gemini's layer reads it
                msg["name"] = either(draw, wild, draw(st.sampled_from(tools or ["f"])))
        else:  # the deprecated function role
            msg["name"] = draw(st.sampled_from(tools or ["f"]))
            msg["content"] = draw(st.none() | text)
        if role not in ("tool", "function") and draw(st.integers(0, 4)) == 0:
            msg["name"] = draw(words)
        messages.append(msg)
    return messages


def tool(draw, name: str, wild: bool) -> dict[str, Any]:
    if draw(st.integers(0, 15)) == 0:
        return {"type": "custom", "custom": {"name": name, "format": {"type": "text"}}}
    function: dict[str, Any] = {"name": name}
    if draw(st.booleans()):
        function["description"] = draw(text)
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    function["parameters"] = draw(
        st.sampled_from([schema, {}, {"properties": {}}])
        | (hostile_object if wild else st.nothing())
    )
    if draw(st.booleans()):
        function["strict"] = draw(st.booleans())
    return {"type": "function", "function": function}


def tool_choice(draw, tools: list[str], wild: bool) -> Any:
    kinds = ["none", "auto", "required"]
    if tools:
        kinds += ["function", "allowed_tools", "allowed_tools", "custom"]
    kind = draw(st.sampled_from(kinds))
    if kind == "function":
        return {"type": "function", "function": {"name": draw(st.sampled_from(tools))}}
    if kind == "custom":
        return {"type": "custom", "custom": {"name": draw(st.sampled_from(tools))}}
    if kind == "allowed_tools":  # OpenAI's schema takes any objects as the allowed tools
        chosen = draw(st.lists(st.sampled_from(tools), min_size=1, unique=True))
        allowed = [
            either(draw, wild, {"type": "function", "function": {"name": name}}) for name in chosen
        ]
        return {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": draw(st.sampled_from(["auto", "required"])),
                "tools": [
                    item if isinstance(item, dict) else {"function": item} for item in allowed
                ],
            },
        }
    return kind


def response_format(draw, wild: bool) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "json_object", "json_schema"]))
    if kind != "json_schema":
        return {"type": kind}
    schema: dict[str, Any] = {"name": "answer"}
    if draw(st.booleans()):
        schema["schema"] = {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "required": ["a"],
            "additionalProperties": False,
        }
        if wild and draw(st.booleans()):
            schema["schema"] = draw(hostile_object)
    if draw(st.booleans()):
        schema["strict"] = draw(st.booleans())
    return {"type": "json_schema", "json_schema": schema}


OPTIONAL = {  # fields every provider type serves
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "max_tokens": st.integers(1, 64),
    "max_completion_tokens": st.integers(1, 64),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "stop": words | st.lists(words, max_size=4),
    "seed": st.integers(-(2**31), 2**31),
    "user": words,
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "parallel_tool_calls": st.booleans(),
    "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high"]),
    "metadata": st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), text, max_size=2),
    "service_tier": st.just("auto"),
    "store": st.booleans(),
    "verbosity": st.sampled_from(["low", "medium", "high"]),
}
EXOTIC = {  # fields some provider types refuse, so rarer: they would hide what follows
    "n": st.integers(1, 3),
    "logit_bias": st.dictionaries(
        st.from_regex(r"[0-9]{1,5}", fullmatch=True), st.integers(-100, 100), max_size=2
    ),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "modalities": st.sampled_from([["text"], ["text", "audio"]]),
    "reasoning_effort": st.sampled_from(["xhigh", "max"]),
    "prediction": st.fixed_dictionaries({"type": st.just("content"), "content": words}),
    "audio": st.fixed_dictionaries({"voice": st.just("alloy"), "format": st.just("wav")}),
}


def sprinkle(draw, value: Any) -> None:
    """Unknown fields with hostile values on some objects of a body: OpenAI's schema
    allows them, and the gateway forwards them."""
    if isinstance(value, list):
        for item in value:
            sprinkle(draw, item)
    elif isinstance(value, dict):
        for item in list(value.values()):
            sprinkle(draw, item)
        key = draw(st.sampled_from(OPEN_KEYS))
        if key not in value and draw(st.integers(0, 3)) == 0:
            value[key] = draw(hostile)


@st.composite
def valid_bodies(draw, wild: bool = False) -> dict[str, Any]:
    """Bodies OpenAI's schema accepts; ``wild`` ones have hostile JSON in its open places:
    unknown fields, JSON Schemas, allowed tools, provider extensions."""
    tools = draw(names)
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(MODELS)),
        "messages": draw(conversations(tools, wild)),
    }
    if tools:
        body["tools"] = [tool(draw, name, wild) for name in tools]
    if draw(st.booleans()):
        body["tool_choice"] = tool_choice(draw, tools, wild)
    if draw(st.booleans()):
        body["response_format"] = response_format(draw, wild)
    for field, strategy in OPTIONAL.items():
        if draw(st.integers(0, 7)) == 0:
            body[field] = draw(strategy)
    if draw(st.integers(0, 4)) == 0:
        field = draw(st.sampled_from(sorted(EXOTIC)))
        body[field] = draw(EXOTIC[field])
    if wild and draw(st.booleans()):
        sprinkle(draw, body)
    return body


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
def broken(draw) -> dict[str, Any]:
    """A valid body with one location replaced by something hostile, removed, or given an
    extra junk entry: the bugs live one field deep, where the outer shape still passes."""
    body = copy.deepcopy(draw(valid_bodies(wild=draw(st.booleans()))))
    by_field: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for at in paths(body)[1:]:
        field = tuple("[]" if isinstance(part, int) else part for part in at)
        by_field.setdefault(field, []).append(at)
    # A field first (``messages[].tool_calls[].function``), then one of its places, so that
    # a rare field breaks as often as a common one. Hypothesis favours the first fields of
    # a list, so half the time the deepest come first.
    deep_first = draw(st.booleans())
    fields = sorted(by_field, key=lambda field: (-len(field) if deep_first else 0, field))
    where = draw(st.sampled_from(by_field[draw(st.sampled_from(fields))]))
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
        parent[last][draw(st.sampled_from(OPEN_KEYS))] = draw(hostile)
    else:
        parent[last] = [parent[last], draw(hostile)]
    return body


KNOWN = (
    "model",
    "messages",
    "tools",
    "tool_choice",
    "response_format",
    "stop",
    "n",
    "max_tokens",
    "stream",
    "stream_options",
    "logit_bias",
    "temperature",
    "parallel_tool_calls",
)
made_up = (
    st.fixed_dictionaries(
        {"model": st.sampled_from(MODELS) | hostile},
        optional={key: hostile for key in KNOWN[1:]},
    )
    | hostile
)


def accepted(body: Any) -> dict[str, Any] | None:
    """The body as the gateway parses it, if its validation lets it through."""
    try:
        parsed = orjson.loads(json.dumps(body))
        ChatCompletionRequest.model_validate(parsed)
    except (orjson.JSONDecodeError, ValidationError):
        return None
    return parsed


# ----------------------------------------------------------------------------- translators


TRANSLATORS = {
    "anthropic": lambda body: to_anthropic_request(body, "claude-sonnet-4-5"),
    "gemini": to_gemini_request,
    "ollama": lambda body: to_ollama_chat(body, "llama3.2", bool(body.get("stream"))),
}


@fuzz(1000)
@given(body=valid_bodies(wild=True) | broken())
def test_translators_translate_or_refuse_what_validation_accepts(body):
    """No AttributeError, TypeError or KeyError from a translator for a body the gateway
    accepts: it is translated, or refused with a 400 naming the field."""
    parsed = accepted(body)
    if parsed is None:
        event("refused by validation")
        return
    for name, translate in TRANSLATORS.items():
        try:
            translate(copy.deepcopy(parsed))
        except InvalidRequest as exc:
            event(f"{name}: 400 {exc.param}")
            assert exc.param, (name, exc.message, parsed)
        else:
            event(f"{name}: translated")


# ----------------------------------------------------------------------------- the gateway


@fuzz(300)
@given(body=valid_bodies())
async def test_valid_bodies_never_5xx(gw, body):
    assert accepted(body) is not None, body  # what OpenAI's schema allows, the gateway does
    resp = await post(gw, body)
    assert_openai_answer(resp, body)
    if resp.status_code == 400:
        event(f"{body['model']}: 400 for {resp.json()['error']['param']}")
    if body["model"] == "gpt-test":  # OpenAI's own shape goes to OpenAI as it is
        assert resp.status_code == 200, (resp.text, body)


@fuzz(300)
@given(body=broken())
async def test_broken_bodies_never_5xx(gw, body):
    assert_openai_answer(await post(gw, body), body)


@fuzz(150)
@given(body=made_up)
async def test_made_up_bodies_never_5xx(gw, body):
    assert_openai_answer(await post(gw, body), body)


# ----------------------------------------------------------------------------- regressions


def _chat(**fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], **fields}


CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
FOUND_BY_FUZZING = [  # each crashed the Anthropic translator: a 503 and a fallback
    (
        {"messages": [{"role": "assistant", "content": "x", "tool_calls": [5]}]},
        "messages[0].tool_calls[0]",
    ),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "function": 5}]}]},
        "messages[0].tool_calls[0].function",
    ),
    (_chat(tools=[{"type": "function", "function": 5}]), "tools[0].function"),
    (
        _chat(response_format={"type": "json_schema", "json_schema": 5}),
        "response_format.json_schema",
    ),
    (_chat(tool_choice={"type": "function", "function": 5}), "tool_choice.function"),
]


@pytest.mark.parametrize(("body", "param"), FOUND_BY_FUZZING)
async def test_untyped_fields_found_by_fuzzing_are_400_before_any_upstream_call(
    gw, fake_openai, fake_anthropic, fake_gemini, fake_ollama, body, param
):
    fakes = (fake_openai, fake_anthropic, fake_gemini, fake_ollama)
    before = [len(fake.requests) for fake in fakes]
    for model in MODELS:
        resp = await post(gw, {"model": model, **body})
        assert resp.status_code == 400, (model, resp.text)
        error = resp.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error", error
        assert param in error["message"]
    assert [len(fake.requests) for fake in fakes] == before
