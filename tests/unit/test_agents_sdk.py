"""The OpenAI Agents SDK (`openai-agents`) against the in-process platform: an agent with a
function tool on the SDK's default model, `OpenAIResponsesModel` (`POST /v1/responses`),
run plain and streamed, and the same agent on `OpenAIChatCompletionsModel`. Each run is
the SDK's own tool loop: the fake upstream calls the tool, the SDK runs it and sends its
output back, and the fake answers with text."""

from __future__ import annotations

from typing import Any

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIProvider,
    OpenAIResponsesModel,
    RawResponsesStreamEvent,
    RunConfig,
    RunItemStreamEvent,
    Runner,
    function_tool,
    set_tracing_disabled,
)

from tests.unit.harness import Harness, in_process_gateway, platform_config, usage_rows

ANSWER = "alpha bravo charlie delta echo foxtrot golf hotel"  # the fake's 8 words
ARGS = {"location": "Paris"}  # what the fake calls any tool with


@pytest.fixture(autouse=True, scope="module")
def no_tracing() -> None:
    """The SDK would otherwise export its traces to OpenAI (left off for the rest of the
    session: turning it back on could send, at exit, what a later test traced)."""
    set_tracing_disabled(True)


@pytest.fixture
async def gw(fake_openai, sqlite_engine):
    async with in_process_gateway(platform_config(fake_openai.base_url), sqlite_engine) as h:
        yield h


def weather_agent(calls: list[str], model: Any = "gpt-test") -> Agent[Any]:
    @function_tool
    def weather(location: str) -> str:
        """The weather in a city.

        Args:
            location: The city.
        """
        calls.append(location)
        return f"sunny in {location}"

    return Agent(
        name="forecaster",
        instructions="Answer with the weather.",
        model=model,
        tools=[weather],
    )


def run_config(gw: Harness) -> RunConfig:
    """The SDK's own provider, on a client pointed at the platform with a platform key
    (`use_responses` left to the SDK's default: the Responses API)."""
    return RunConfig(model_provider=OpenAIProvider(openai_client=gw.sdk()), tracing_disabled=True)


def platform_requests(fake_openai, start: int) -> list[dict[str, Any]]:
    return [r["body"] for r in fake_openai.requests[start:]]


async def check_loop(gw: Harness, fake_openai, start: int, stream: bool) -> None:
    """Two model calls reached the upstream (the tool call, then the answer to its output),
    and the platform recorded each as a chat call of the key, streamed or not."""
    sent = platform_requests(fake_openai, start)
    assert len(sent) == 2
    assert [m["role"] for m in sent[1]["messages"]] == ["system", "user", "assistant", "tool"]
    [call] = sent[1]["messages"][2]["tool_calls"]
    assert call["function"] == {"name": "weather", "arguments": '{"location": "Paris"}'}
    assert sent[1]["messages"][3] == {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": "sunny in Paris",
    }
    rows = await usage_rows(gw)
    assert len(rows) == 2
    for row in rows:
        assert (row["endpoint"], row["model"], row["status"]) == (
            "chat/completions",
            "gpt-test",
            "ok",
        )
        assert row["stream"] is stream and row["completion_tokens"] > 0


def default_model(config: RunConfig) -> Any:
    assert config.model_provider is not None
    return config.model_provider.get_model("gpt-test")


async def test_default_model_is_the_responses_api(gw):
    assert isinstance(default_model(run_config(gw)), OpenAIResponsesModel)


async def test_agent_with_a_function_tool(gw, fake_openai):
    calls: list[str] = []
    start = len(fake_openai.requests)
    result = await Runner.run(
        weather_agent(calls), "What is the weather in Paris?", run_config=run_config(gw)
    )
    assert calls == [ARGS["location"]]
    assert result.final_output == ANSWER
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    # every model call went through /v1/responses and came back with its usage
    assert len(result.raw_responses) == 2
    assert all(r.response_id and r.response_id.startswith("resp_") for r in result.raw_responses)
    assert all(r.usage.output_tokens > 0 for r in result.raw_responses)
    await check_loop(gw, fake_openai, start, stream=False)


async def test_agent_on_the_sdks_default_model_name(gw, fake_openai, monkeypatch):
    """An agent that names no model: the SDK's default name, set to a platform model with
    OPENAI_DEFAULT_MODEL, on the default (Responses) model."""
    monkeypatch.setenv("OPENAI_DEFAULT_MODEL", "gpt-test")
    calls: list[str] = []
    agent = weather_agent(calls, model=None)
    result = await Runner.run(agent, "Weather in Paris?", run_config=run_config(gw))
    assert calls == ["Paris"] and result.final_output == ANSWER
    assert all(r["body"]["model"] == "gpt-fake" for r in fake_openai.requests[-2:])


GPT_5 = "gpt-5.6-luna"  # the SDK's own default model name


@pytest.fixture
async def gw5(fake_openai, sqlite_engine):
    """The platform with a model named as the SDK's default, a gpt-5 name, for which the
    SDK sends its GPT-5 default settings (``reasoning``, ``text.verbosity``)."""
    config = platform_config(fake_openai.base_url)
    models = [
        *config.model_dump()["models"],
        {"name": GPT_5, "provider": "fake", "model": "gpt-fake"},
    ]
    config = type(config).model_validate({**config.model_dump(), "models": models})
    async with in_process_gateway(config, sqlite_engine) as h:
        yield h


@pytest.mark.parametrize("stream", [False, True])
async def test_agent_on_a_gpt_5_model_with_the_sdks_default_settings(
    gw5, fake_openai, monkeypatch, stream
):
    """An agent that names no model and sets no model settings, on the SDK's default
    name: the SDK's GPT-5 defaults (reasoning effort, low verbosity) reach the chat path
    as ``reasoning_effort`` and ``verbosity``, and the tool loop runs through."""
    from agents.models import get_default_model, get_default_model_settings

    monkeypatch.delenv("OPENAI_DEFAULT_MODEL", raising=False)
    assert get_default_model() == GPT_5
    defaults = get_default_model_settings(GPT_5)
    assert defaults.reasoning is not None and defaults.verbosity == "low"
    calls: list[str] = []
    start = len(fake_openai.requests)
    agent = weather_agent(calls, model=None)
    if stream:
        run = Runner.run_streamed(agent, "Weather in Paris?", run_config=run_config(gw5))
        async for _ in run.stream_events():
            pass
        result: Any = run
    else:
        result = await Runner.run(agent, "Weather in Paris?", run_config=run_config(gw5))
    assert calls == ["Paris"] and result.final_output == ANSWER
    sent = platform_requests(fake_openai, start)
    assert len(sent) == 2
    for body in sent:
        assert body["model"] == "gpt-fake"
        assert body["reasoning_effort"] == defaults.reasoning.effort
        assert body["verbosity"] == "low"
    for raw in result.raw_responses:
        assert raw.response_id and raw.response_id.startswith("resp_")


async def test_agent_with_a_function_tool_streamed(gw, fake_openai):
    calls: list[str] = []
    start = len(fake_openai.requests)
    result = Runner.run_streamed(
        weather_agent(calls), "What is the weather in Paris?", run_config=run_config(gw)
    )
    raw: list[str] = []
    items: list[str] = []
    text = ""
    async for event in result.stream_events():
        if isinstance(event, RawResponsesStreamEvent):
            raw.append(event.data.type)
            if event.data.type == "response.output_text.delta":
                text += event.data.delta
        elif isinstance(event, RunItemStreamEvent):
            items.append(event.name)
    assert calls == [ARGS["location"]]
    assert result.final_output == ANSWER and text == ANSWER
    assert items == ["tool_called", "tool_output", "message_output_created"]
    assert raw.count("response.created") == 2 and raw.count("response.completed") == 2
    assert "response.function_call_arguments.delta" in raw
    assert len(result.raw_responses) == 2
    assert all(r.usage.output_tokens > 0 for r in result.raw_responses)
    await check_loop(gw, fake_openai, start, stream=True)


async def test_agent_remembers_through_stored_responses(gw, fake_openai):
    """The SDK's server-side conversation: a second run continues the first by
    `previous_response_id`, which the platform loads from its stored responses."""
    calls: list[str] = []
    agent = weather_agent(calls)
    first = await Runner.run(agent, "What is the weather in Paris?", run_config=run_config(gw))
    start = len(fake_openai.requests)
    second = await Runner.run(
        agent.clone(tools=[], model_settings=ModelSettings()),
        "And tomorrow?",
        previous_response_id=first.last_response_id,
        run_config=run_config(gw),
    )
    assert second.final_output == ANSWER and calls == ["Paris"]
    [sent] = platform_requests(fake_openai, start)
    roles = [m["role"] for m in sent["messages"]]
    # the stored conversation (its input and output, the tool loop included), then the new turn
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent["messages"][-1] == {"role": "user", "content": "And tomorrow?"}


async def test_agent_on_chat_completions(gw, fake_openai):
    calls: list[str] = []
    start = len(fake_openai.requests)
    model = OpenAIChatCompletionsModel(model="gpt-test", openai_client=gw.sdk())
    result = await Runner.run(
        weather_agent(calls, model),
        "What is the weather in Paris?",
        run_config=RunConfig(tracing_disabled=True),
    )
    assert calls == [ARGS["location"]] and result.final_output == ANSWER
    await check_loop(gw, fake_openai, start, stream=False)
