"""A self-hosted model behind the gateway: the tiny local model through the transformers
engine, driven by the official openai SDK (in-process, no Ray)."""

from __future__ import annotations

import openai
import pytest

from forge.config import PlatformConfig
from serve.models.tiny import TinyModelSpec, build_tiny_model
from tests.unit.harness import in_process_gateway, usage_rows

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), TinyModelSpec(corpus_files=40)))


@pytest.fixture
async def gw(tiny_path, sqlite_engine):
    config = PlatformConfig.model_validate(
        {
            "providers": [{"name": "local", "type": "transformers", "model_path": tiny_path}],
            "models": [{"name": "tiny-llama", "provider": "local", "context_window": 2048}],
        }
    )
    async with in_process_gateway(config, sqlite_engine) as h:
        yield h


async def test_chat_stream_and_exact_usage(gw):
    client = gw.sdk()
    c = await client.chat.completions.create(
        model="tiny-llama",
        max_tokens=8,
        temperature=0,
        messages=[{"role": "user", "content": "def f():"}],
    )
    assert c.model == "tiny-llama" and c.choices[0].finish_reason in ("length", "stop")
    assert c.usage.completion_tokens <= 8 and c.usage.prompt_tokens > 3
    stream = await client.chat.completions.create(
        model="tiny-llama",
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "def f():"}],
    )
    chunks = [x async for x in stream]
    text = "".join(x.choices[0].delta.content or "" for x in chunks if x.choices)
    assert text == c.choices[0].message.content  # greedy: the same answer both ways
    assert chunks[-1].usage.completion_tokens == c.usage.completion_tokens
    rows = await usage_rows(gw)
    assert len(rows) == 2 and not any(r["usage_estimated"] for r in rows)


async def test_completions_endpoint(gw):
    c = await gw.sdk().completions.create(model="tiny-llama", prompt="import", max_tokens=4)
    assert c.choices[0].finish_reason in ("length", "stop") and c.usage.completion_tokens <= 4


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"max_tokens": 5000}, "max_tokens"),
    ],
)
async def test_what_it_cannot_do_is_400(gw, extra, param):
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "hi"}], **extra
        )
    assert err.value.body["param"] == param


async def test_an_empty_prompt_is_400_and_top_p_0_is_greedy(gw):
    with pytest.raises(openai.BadRequestError) as err:
        await gw.sdk().completions.create(model="tiny-llama", prompt="", max_tokens=4)
    assert err.value.body["param"] == "prompt"
    ask = {"model": "tiny-llama", "max_tokens": 6, "messages": [{"role": "user", "content": "a"}]}
    greedy = await gw.sdk().chat.completions.create(temperature=0, **ask)
    top_p_0 = await gw.sdk().chat.completions.create(temperature=1.5, top_p=0, **ask)
    assert top_p_0.choices[0].message.content == greedy.choices[0].message.content


async def test_an_unset_max_tokens_means_256_capped_by_the_room_in_the_window(gw):
    """The README's default, tested: at most 256 new tokens, fewer when the prompt leaves
    less room in the context window."""
    client = gw.sdk()
    c = await client.chat.completions.create(
        model="tiny-llama", temperature=0, messages=[{"role": "user", "content": "def f():"}]
    )
    assert c.usage.completion_tokens <= 256
    if c.choices[0].finish_reason == "length":
        assert c.usage.completion_tokens == 256
    long_prompt = "x = 1\n" * 480  # most of the 2,048-token window
    c = await client.chat.completions.create(
        model="tiny-llama", temperature=0, messages=[{"role": "user", "content": long_prompt}]
    )
    room = 2048 - c.usage.prompt_tokens
    assert 0 < room < 256 and c.usage.completion_tokens <= room
