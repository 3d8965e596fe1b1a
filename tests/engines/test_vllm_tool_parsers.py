"""Our tool-call parsers read model text as vLLM's own parsers for the same families do
(the calls, their arguments as JSON, whether any were made). Runs in the vLLM venv."""

from __future__ import annotations

import json

import pytest

from serve.structured.tool_parsers import FAMILIES, CallDelta, TaggedCalls

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

CALL = '{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}'
SAMPLES = {
    "hermes": [
        "No tools needed.",
        f"<tool_call>\n{CALL}\n</tool_call>",
        f"Checking. <tool_call>{CALL}</tool_call>",
        f'<tool_call>{CALL}</tool_call>\n<tool_call>{{"name": "t", "arguments": {{}}}}</tool_call>',
        f"<tool_call>{CALL}",  # the closing tag never came: vLLM still reads the call
        "<tool_call>not json</tool_call>",
        "a < b <tool",
    ],
    "llama3_json": [
        "The weather is fine.",
        '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        '{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": [1, 2]}}',
    ],
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.add_tokens(["<tool_call>", "</tool_call>", "<|python_tag|>"], special_tokens=True)
    return tok


def ours(family: str, text: str) -> tuple[list[tuple[str, object]], str]:
    stream = TaggedCalls(FAMILIES[family])  # type: ignore[index]
    pieces = [*stream.feed(text), *stream.finish()]
    calls = [(p.name, json.loads(p.arguments)) for p in pieces if isinstance(p, CallDelta)]
    return calls, "".join(p for p in pieces if isinstance(p, str))


def theirs(family: str, text: str, tokenizer) -> tuple[list[tuple[str, object]], str | None]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    parser = ToolParserManager.get_tool_parser(family)(tokenizer)
    request = ChatCompletionRequest(
        model="m",
        messages=[{"role": "user", "content": "?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    )
    info = parser.extract_tool_calls(text, request)
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in info.tool_calls]
    return calls, info.content


@pytest.mark.parametrize(
    ("family", "text"), [(f, t) for f, texts in SAMPLES.items() for t in texts]
)
def test_the_same_calls_as_vllm(family, text, tokenizer):
    our_calls, our_content = ours(family, text)
    their_calls, their_content = theirs(family, text, tokenizer)
    assert our_calls == their_calls
    if not their_calls:  # no calls: both give the text back as it was
        assert our_content == text == their_content
    elif their_content:  # text before the first call
        assert our_content.startswith(their_content)
