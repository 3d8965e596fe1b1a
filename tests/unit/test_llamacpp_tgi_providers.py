"""llama.cpp and Hugging Face TGI providers against fakes of their servers."""

from __future__ import annotations

import pytest

from forge.config import ProviderConfig
from forge.errors import ContextLengthExceeded, InvalidRequest, UpstreamError, UpstreamUnavailable
from serve.providers.registry import make_provider
from tests.fakes.openai_family import FakeLlamaCpp, FakeTgi

MSG = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def llamacpp():
    server = FakeLlamaCpp().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tgi():
    server = FakeTgi().start()
    yield server
    server.stop()


async def test_llamacpp_chat_stream_health_and_context_error(llamacpp):
    provider = make_provider(
        ProviderConfig(name="local", type="llamacpp", base_url=llamacpp.base_url)
    )
    try:
        reply = await provider.complete("chat/completions", {**MSG, "model": "qwen"}, "pub")
        assert reply.usage.completion_tokens == 8
        items = [
            i
            async for i in provider.stream(
                "chat/completions", {**MSG, "model": "qwen", "stream": True}, "pub", False
            )
        ]
        assert items[-1].status == "ok" and items[-2] == b"data: [DONE]\n\n"
        assert await provider.ping()
        llamacpp.loading = True
        assert not await provider.ping()
        llamacpp.loading = False
        with pytest.raises(ContextLengthExceeded) as err:
            await provider.complete("chat/completions", {**MSG, "model": "context-overflow"}, "p")
        assert err.value.code == "context_length_exceeded" and "4096" in err.value.message
        assert err.value.status_code == 400
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("model", "cls", "status"),
    [
        ("validation", InvalidRequest, 400),
        ("overloaded", UpstreamUnavailable, 503),
        ("generation-error", UpstreamError, 502),
    ],
)
async def test_tgi_error_bodies(tgi, monkeypatch, model, cls, status):
    monkeypatch.setenv("HF_TOKEN_FOR_TEST", "hf_test_token")
    provider = make_provider(
        ProviderConfig(
            name="hf", type="hf_tgi", base_url=tgi.base_url, api_key_env="HF_TOKEN_FOR_TEST"
        )
    )
    try:
        reply = await provider.complete("chat/completions", {**MSG, "model": "tgi"}, "pub")
        assert reply.usage.completion_tokens == 8
        assert tgi.requests[-1]["headers"]["Authorization"] == "Bearer hf_test_token"
        with pytest.raises(cls) as err:
            await provider.complete("chat/completions", {**MSG, "model": model}, "pub")
        assert err.value.status_code == status and err.value.provider == "hf"
    finally:
        await provider.close()
