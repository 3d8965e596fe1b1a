"""Anthropic Messages request shapes, validated as strictly as Anthropic's API does, so that
a malformed body is a 400 naming its field rather than a failure deeper in the gateway.

Unknown fields stay allowed (Anthropic adds fields often; the translation ignores what it
does not know), but every field we read is typed, every content block is checked against
its ``type``, and the conversation rules Anthropic enforces (non-empty content, tool
results answering the previous turn's tool uses) hold before anything is translated.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from forge.protocol.base64data import looks_base64
from forge.protocol.openai import ModelName


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


def _str_or_list(value: Any) -> str:
    return "str" if isinstance(value, str) else "list[blocks]"


def _text_or_blocks(block: Any) -> Any:
    """``str | list[block]`` whose errors, for anything but a string, are the list's own:
    a plain union would report "Input should be a valid string" first. The list tag
    starts with ``list[`` so that error locations (``param``) skip it."""
    return Annotated[
        Annotated[str, Tag("str")] | Annotated[list[block], Tag("list[blocks]")],
        Discriminator(_str_or_list),
    ]


class CacheControl(_Open):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(_Open):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


def _base64(data: str) -> str:
    if not looks_base64(data):
        raise PydanticCustomError("base64", "not valid base64")
    return data


class Base64ImageSource(_Open):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str

    _is_base64 = field_validator("data")(_base64)


class UrlSource(_Open):
    type: Literal["url"]
    url: Annotated[str, Field(min_length=1)]


class ImageBlock(_Open):
    type: Literal["image"]
    source: Annotated[Base64ImageSource | UrlSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class Base64PdfSource(_Open):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str

    _is_base64 = field_validator("data")(_base64)


class PlainTextSource(_Open):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


SourceContent = _text_or_blocks(Annotated[TextBlock | ImageBlock, Field(discriminator="type")])


class ContentSource(_Open):
    type: Literal["content"]
    content: SourceContent


class DocumentBlock(_Open):
    type: Literal["document"]
    source: Annotated[
        Base64PdfSource | PlainTextSource | ContentSource | UrlSource,
        Field(discriminator="type"),
    ]
    title: str | None = None
    context: str | None = None
    citations: dict[str, Any] | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(_Open):
    type: Literal["tool_use"]
    id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    input: dict[str, Any]
    cache_control: CacheControl | None = None


ResultContent = _text_or_blocks(
    Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]
)


class ToolResultBlock(_Open):
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1)]
    content: ResultContent | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(_Open):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(_Open):
    type: Literal["redacted_thinking"]
    data: str


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock,
    Field(discriminator="type"),
]
MessageContent = _text_or_blocks(ContentBlock)
SystemContent = _text_or_blocks(TextBlock)


class AnthropicMessage(_Open):
    role: Literal["user", "assistant"]
    content: MessageContent


class InputSchema(_Open):
    type: Literal["object"]
    properties: dict[str, Any] | None = None
    required: list[str] | None = None


class Tool(_Open):
    """A client tool; Anthropic's server tools (``web_search_…`` and the like) run on
    Anthropic's side and cannot be served by other models, so they are refused."""

    type: Literal["custom"] | None = None
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")]
    description: str | None = None
    input_schema: InputSchema
    cache_control: CacheControl | None = None


class _ParallelChoice(_Open):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAuto(_ParallelChoice):
    type: Literal["auto"]


class ToolChoiceAny(_ParallelChoice):
    type: Literal["any"]


class ToolChoiceTool(_ParallelChoice):
    type: Literal["tool"]
    name: Annotated[str, Field(min_length=1)]


class ToolChoiceNone(_Open):
    type: Literal["none"]


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone,
    Field(discriminator="type"),
]


class Metadata(_Open):
    user_id: Annotated[str, Field(max_length=256)] | None = None


class ThinkingEnabled(_Open):
    type: Literal["enabled"]
    budget_tokens: Annotated[int, Field(ge=1024)]


class ThinkingOther(_Open):
    type: Literal["disabled", "adaptive"]


Thinking = Annotated[ThinkingEnabled | ThinkingOther, Field(discriminator="type")]


def _bad(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_request", message)


def check_conversation(messages: list[AnthropicMessage]) -> list[AnthropicMessage]:
    """The rules Anthropic checks across blocks and turns, with Anthropic's wording:
    content is non-empty (but for a final assistant prefill), text blocks hold text,
    tool uses come from the assistant and are answered, first thing, in the next turn."""
    last = len(messages) - 1
    for i, msg in enumerate(messages):
        blocks = msg.content
        if isinstance(blocks, str):
            if not blocks and not (i == last and msg.role == "assistant"):
                raise _bad(f"messages.{i}: text content blocks must be non-empty")
            blocks = []
        elif not blocks and not (i == last and msg.role == "assistant"):
            raise _bad(
                f"messages.{i}: all messages must have non-empty content except for "
                "the optional final assistant message"
            )
        for j, block in enumerate(blocks):
            if isinstance(block, TextBlock):
                if not block.text:
                    raise _bad(f"messages.{i}.content.{j}: text content blocks must be non-empty")
                if not block.text.strip():
                    raise _bad(
                        f"messages.{i}.content.{j}: text content blocks must contain "
                        "non-whitespace text"
                    )
            elif isinstance(block, ToolUseBlock) and msg.role != "assistant":
                raise _bad(f"messages.{i}.content.{j}: tool_use blocks must be in assistant turns")
            elif isinstance(block, ThinkingBlock | RedactedThinkingBlock) and msg.role != (
                "assistant"
            ):
                raise _bad(f"messages.{i}.content.{j}: thinking blocks must be in assistant turns")
            elif isinstance(block, ToolResultBlock) and msg.role != "user":
                raise _bad(f"messages.{i}.content.{j}: tool_result blocks must be in user turns")
        _check_tool_pairs(messages, i)
    if not any(_has_content(msg) for msg in messages):
        raise _bad(
            "messages: the conversation needs content besides thinking blocks and an empty "
            "final assistant message"
        )
    final = messages[last]
    if final.role == "assistant" and _final_text(final).rstrip() != _final_text(final):
        raise _bad("final assistant content cannot end with trailing whitespace")
    return messages


def _has_content(msg: AnthropicMessage) -> bool:
    if isinstance(msg.content, str):
        return bool(msg.content)
    return any(not isinstance(b, ThinkingBlock | RedactedThinkingBlock) for b in msg.content)


def _final_text(msg: AnthropicMessage) -> str:
    if isinstance(msg.content, str):
        return msg.content
    last = msg.content[-1] if msg.content else None
    return last.text if isinstance(last, TextBlock) else ""


def _blocks(msg: AnthropicMessage) -> list[Any]:
    return [] if isinstance(msg.content, str) else msg.content


def _check_tool_pairs(messages: list[AnthropicMessage], i: int) -> None:
    blocks = _blocks(messages[i])
    uses = {b.id for b in _blocks(messages[i - 1]) if isinstance(b, ToolUseBlock)} if i else set()
    kinds = [isinstance(b, ToolResultBlock) for b in blocks]
    if uses and kinds != sorted(kinds, reverse=True):
        raise _bad(
            f"messages.{i}: tool_result blocks must come first in a message that answers "
            "tool_use blocks, before any other content"
        )
    for j, block in enumerate(blocks):
        if isinstance(block, ToolResultBlock) and block.tool_use_id not in uses:
            raise _bad(
                f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {block.tool_use_id}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message"
            )
    if i + 1 < len(messages):
        answered = {
            b.tool_use_id for b in _blocks(messages[i + 1]) if isinstance(b, ToolResultBlock)
        }
        missing = [b.id for b in blocks if isinstance(b, ToolUseBlock) and b.id not in answered]
        if missing:
            raise _bad(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have "
                "a corresponding `tool_result` block in the next message"
            )


def _check_system(system: Any) -> Any:
    for j, block in enumerate(system if isinstance(system, list) else ()):
        if not block.text.strip():
            raise _bad(f"system.{j}: text content blocks must contain non-whitespace text")
    return system


class _Conversation(_Open):
    model: ModelName
    messages: Annotated[list[AnthropicMessage], Field(min_length=1)]
    system: SystemContent | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None

    @field_validator("messages")
    @classmethod
    def _conversation(cls, messages: list[AnthropicMessage]) -> list[AnthropicMessage]:
        return check_conversation(messages)

    @field_validator("system")
    @classmethod
    def _system(cls, system: Any) -> Any:
        return _check_system(system)


class MessagesRequest(_Conversation):
    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _budget(self) -> MessagesRequest:
        if isinstance(self.thinking, ThinkingEnabled) and (
            self.thinking.budget_tokens >= self.max_tokens
        ):
            raise _bad("`max_tokens` must be greater than `thinking.budget_tokens`")
        return self


class CountTokensRequest(_Conversation):
    pass
