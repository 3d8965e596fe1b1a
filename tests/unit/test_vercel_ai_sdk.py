"""The Vercel AI SDK (npm `ai` with `@ai-sdk/openai`, pinned in tests/js/package.json)
against the platform: the in-process gateway served on a real local port, and
tests/js/vercel_ai.mjs run by node with its default `openai(...)` provider (the Responses
API): `generateText` (and a chat's next turn, which refers to the stored answer by
`item_reference`), `streamText`, and a tool loop, plain and streamed."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn

from tests.fakes.server import free_port
from tests.unit.harness import Harness, in_process_gateway, platform_config, usage_rows

JS = Path(__file__).resolve().parents[1] / "js"
ANSWER = "alpha bravo charlie delta echo foxtrot golf hotel"  # the fake's 8 words
NODE_TIMEOUT_S = 60


class PathRecorder:
    """The served app, noting each request's method and path as the platform gets it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@pytest.fixture
async def served(fake_openai, sqlite_engine) -> AsyncIterator[tuple[Harness, PathRecorder, str]]:
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        recorder = PathRecorder(h.app)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                recorder, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            yield h, recorder, f"http://127.0.0.1:{port}/v1"
        finally:
            server.should_exit = True
            await serving


async def run_node(base_url: str, api_key: str) -> tuple[dict[str, Any], float]:
    node = shutil.which("node")
    assert node is not None, "node is not installed (the Vercel AI SDK test needs Node.js >= 18)"
    if not all((JS / "node_modules" / name).is_dir() for name in ("ai", "@ai-sdk/openai", "zod")):
        pytest.fail(
            "tests/js/node_modules is missing: run `npm ci --prefix tests/js` "
            "(scripts/setup.sh does it)"
        )
    env = {**os.environ, "BASE_URL": base_url, "API_KEY": api_key}
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy"):
        env.pop(name, None)
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS / "vercel_ai.mjs"),
        cwd=JS,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"node tests/js/vercel_ai.mjs ran past {NODE_TIMEOUT_S} s")
    took = time.monotonic() - began
    lines = out.decode().strip().splitlines()
    assert lines, f"no summary from vercel_ai.mjs (exit {proc.returncode}): {err.decode()}"
    summary = orjson.loads(lines[-1])
    assert proc.returncode == 0 and summary["ok"], (summary, err.decode())
    return summary, took


def check_tool_loop(loop: dict[str, Any]) -> None:
    """Two steps: the fake's tool call, run by the SDK with the fake's arguments, then the
    text answer to its output."""
    assert loop["executed"] == [{"location": "Paris"}]
    first, second = loop["steps"]
    assert first["finishReason"] == "tool-calls"
    assert first["toolCalls"] == [{"toolName": "weather", "input": {"location": "Paris"}}]
    assert first["toolResults"] == [{"toolName": "weather", "output": "sunny in Paris"}]
    assert second["finishReason"] == "stop" and second["toolCalls"] == []
    assert second["text"] == ANSWER and loop["text"] == ANSWER
    assert loop["totalUsage"]["outputTokens"] > 0


async def test_vercel_ai_sdk_default_openai_provider(served, fake_openai):
    h, recorder, base_url = served
    start = len(fake_openai.requests)
    summary, took = await run_node(base_url, h.user_key)

    # the default `openai(...)` model is the Responses API one, and that is all it called
    assert summary["provider"] == "openai.responses"
    assert summary["fetched"] == ["/v1/responses"] * 7
    assert recorder.seen == [("POST", "/v1/responses")] * 7

    generated = summary["generate"]
    assert generated["text"] == ANSWER and generated["finishReason"] == "stop"
    assert generated["usage"]["outputTokens"] == 8 and generated["usage"]["inputTokens"] > 0
    assert generated["responseId"].startswith("resp_")

    # the next turn of a chat: the SDK sent the first answer as an `item_reference`
    # (store is on by default), which the platform took from the stored response
    assert summary["followUp"] == {"text": ANSWER, "finishReason": "stop"}

    streamed = summary["stream"]
    assert streamed["text"] == ANSWER and streamed["finalText"] == ANSWER
    assert streamed["finishReason"] == "stop" and streamed["usage"]["outputTokens"] == 8

    check_tool_loop(summary["toolLoop"])
    check_tool_loop(summary["streamToolLoop"])
    assert {"tool-call", "tool-result", "text-delta"} <= set(summary["streamToolLoop"]["parts"])

    # what reached the upstream
    sent = [r["body"] for r in fake_openai.requests[start:]]
    assert len(sent) == 7
    assert sent[1]["messages"] == [
        {"role": "user", "content": "Say something."},
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Say it again."},
    ]
    for follow_up in (sent[4], sent[6]):  # each tool loop's second step
        call, output = follow_up["messages"][-2:]
        assert call["tool_calls"][0]["function"] == {
            "name": "weather",
            "arguments": '{"location":"Paris"}',
        }
        assert output == {
            "role": "tool",
            "tool_call_id": call["tool_calls"][0]["id"],
            "content": "sunny in Paris",
        }

    rows = await usage_rows(h)
    assert len(rows) == 7 and all(r["status"] == "ok" for r in rows)
    assert [r["stream"] for r in rows] == [False, False, True, False, False, True, True]
    assert took < NODE_TIMEOUT_S
