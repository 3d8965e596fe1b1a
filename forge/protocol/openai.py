"""OpenAI request shapes, validated strictly but open to fields we do not know.

The gateway validates with these models and then forwards the client's own JSON object,
so unknown fields reach the provider untouched and nothing is re-serialised. Every field a
translator reads is typed as OpenAI's OpenAPI spec types it (``CreateChatCompletionRequest``
and the message, content part, tool and response format schemas it refers to), so that a
malformed body is a 400 naming its field here, never a crash in a provider's translator.

The nested shapes are TypedDicts rather than models: the result is thrown away, and a
dict is built in half the time of a model instance. OpenAI's unions (messages by
``role``; parts, tools and tool calls by ``type``; a string or an array) are validated as
the one member the input names, so that an error is that member's own. Their members are
tagged ``literal[…]``, a location ``gateway.errors.param_path`` leaves out, so that
``param`` is the client's own path (``messages[1].tool_calls[0].function``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce
from operator import or_
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, with_config
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

OPEN = ConfigDict(extra="allow", strict=True)


class _Open(BaseModel):
    model_config = OPEN


def _tagged(key: str, members: Mapping[str, type]) -> Any:
    """The union of ``members``, objects told apart by ``key``, validated as the member
    the input's tag names. A missing or unknown tag is refused at ``key``, naming the
    tags there are."""
    tags = {tag: f"literal[{tag}]" for tag in members}
    other = "literal[?]"  # validated as ``tag_only``, for its errors alone
    tag_only = with_config(OPEN)(TypedDict("Tagged", {key: Literal[tuple(members)]}))

    def tag_of(value: Any) -> str:
        tag = value.get(key) if isinstance(value, dict) else None
        return tags.get(tag, other) if isinstance(tag, str) else other

    union = reduce(or_, [Annotated[member, Tag(tags[t])] for t, member in members.items()])
    return Annotated[union | Annotated[tag_only, Tag(other)], Discriminator(tag_of)]


def _json_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "literal[string]"
    return "literal[structure]" if isinstance(value, list | dict) else None


def _text_or(other: Any, what: str, text: Any = str) -> Any:
    """``text | other`` for a string type ``text`` and an array or object type ``other``,
    validated as the member the input's JSON type names."""
    return Annotated[
        Annotated[text, Tag("literal[string]")] | Annotated[other, Tag("literal[structure]")],
        Discriminator(
            _json_kind,
            custom_error_type="invalid_type",
            custom_error_message=f"Input should be a string or {what}",
        ),
    ]


FunctionName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]  # OpenAI's rule
Probability = Annotated[float, Field(ge=0, le=1)]
MODEL_NAME_MAX = 200  # the usage ledger's column; no provider's model id comes near it
ModelName = Annotated[str, Field(min_length=1, max_length=MODEL_NAME_MAX)]

# ----------------------------------------------------------------------------- content parts


@with_config(OPEN)
class TextPart(TypedDict):
    type: Literal["text"]
    text: str


@with_config(OPEN)
class ImageUrl(TypedDict):
    url: str
    detail: NotRequired[Literal["auto", "low", "high"] | None]


@with_config(OPEN)
class ImagePart(TypedDict):
    type: Literal["image_url"]
    image_url: ImageUrl


@with_config(OPEN)
class InputAudio(TypedDict):
    data: str
    format: Literal["wav", "mp3"]


@with_config(OPEN)
class AudioPart(TypedDict):
    type: Literal["input_audio"]
    input_audio: InputAudio


@with_config(OPEN)
class FileRef(TypedDict):
    filename: NotRequired[str | None]
    file_data: NotRequired[str | None]
    file_id: NotRequired[str | None]


@with_config(OPEN)
class FilePart(TypedDict):
    type: Literal["file"]
    file: FileRef


@with_config(OPEN)
class RefusalPart(TypedDict):
    type: Literal["refusal"]
    refusal: str


def _content(**parts: type) -> Any:
    """A message's content: a string, or a non-empty array of the parts its role takes."""
    return _text_or(
        Annotated[list[_tagged("type", parts)], Field(min_length=1)], "an array of content parts"
    )


TextContent = _content(text=TextPart)
UserContent = _content(text=TextPart, image_url=ImagePart, input_audio=AudioPart, file=FilePart)
AssistantContent = _content(text=TextPart, refusal=RefusalPart)

# ----------------------------------------------------------------------------- messages


@with_config(OPEN)
class FunctionCall(TypedDict):
    """A function call the assistant made; ``arguments`` is JSON text as the model wrote it."""

    name: str
    arguments: str


@with_config(OPEN)
class FunctionToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall


@with_config(OPEN)
class CustomCall(TypedDict):
    name: str
    input: str


@with_config(OPEN)
class CustomToolCall(TypedDict):
    id: str
    type: Literal["custom"]
    custom: CustomCall


ToolCall = _tagged("type", {"function": FunctionToolCall, "custom": CustomToolCall})


@with_config(OPEN)
class AssistantAudio(TypedDict):
    id: str


@with_config(OPEN)
class SystemMessage(TypedDict):
    role: Literal["system"]
    content: TextContent
    name: NotRequired[str | None]


@with_config(OPEN)
class DeveloperMessage(TypedDict):
    role: Literal["developer"]
    content: TextContent
    name: NotRequired[str | None]


@with_config(OPEN)
class UserMessage(TypedDict):
    role: Literal["user"]
    content: UserContent
    name: NotRequired[str | None]


@with_config(OPEN)
class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: NotRequired[AssistantContent | None]
    refusal: NotRequired[str | None]
    name: NotRequired[str | None]
    audio: NotRequired[AssistantAudio | None]
    tool_calls: NotRequired[list[ToolCall] | None]
    function_call: NotRequired[FunctionCall | None]


@with_config(OPEN)
class ToolMessage(TypedDict):
    role: Literal["tool"]
    content: TextContent
    tool_call_id: str


@with_config(OPEN)
class FunctionMessage(TypedDict):
    role: Literal["function"]
    content: str | None
    name: str


ChatMessage = _tagged(
    "role",
    {
        "system": SystemMessage,
        "developer": DeveloperMessage,
        "user": UserMessage,
        "assistant": AssistantMessage,
        "tool": ToolMessage,
        "function": FunctionMessage,
    },
)

# ----------------------------------------------------------------------------- tools


@with_config(OPEN)
class FunctionDefinition(TypedDict):
    name: FunctionName
    description: NotRequired[str | None]
    parameters: NotRequired[dict[str, Any] | None]  # a JSON Schema object
    strict: NotRequired[bool | None]


@with_config(OPEN)
class FunctionTool(TypedDict):
    type: Literal["function"]
    function: FunctionDefinition


@with_config(OPEN)
class CustomFormatText(TypedDict):
    type: Literal["text"]


@with_config(OPEN)
class Grammar(TypedDict):
    definition: str
    syntax: Literal["lark", "regex"]


@with_config(OPEN)
class CustomFormatGrammar(TypedDict):
    type: Literal["grammar"]
    grammar: Grammar


CustomFormat = _tagged("type", {"text": CustomFormatText, "grammar": CustomFormatGrammar})


@with_config(OPEN)
class CustomDefinition(TypedDict):
    name: str
    description: NotRequired[str | None]
    format: NotRequired[CustomFormat | None]


@with_config(OPEN)
class CustomTool(TypedDict):
    type: Literal["custom"]
    custom: CustomDefinition


Tool = _tagged("type", {"function": FunctionTool, "custom": CustomTool})


@with_config(OPEN)
class ToolName(TypedDict):
    name: str


@with_config(OPEN)
class NamedToolChoice(TypedDict):
    type: Literal["function"]
    function: ToolName


@with_config(OPEN)
class NamedCustomChoice(TypedDict):
    type: Literal["custom"]
    custom: ToolName


@with_config(OPEN)
class AllowedTools(TypedDict):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]  # OpenAI: tool definitions, any objects


@with_config(OPEN)
class AllowedToolsChoice(TypedDict):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = _text_or(
    _tagged(
        "type",
        {
            "function": NamedToolChoice,
            "custom": NamedCustomChoice,
            "allowed_tools": AllowedToolsChoice,
        },
    ),
    "a tool choice object",
    text=Literal["none", "auto", "required"],
)
FunctionCallChoice = _text_or(ToolName, "an object naming a function", Literal["none", "auto"])

# ----------------------------------------------------------------------------- output


@with_config(OPEN)
class ResponseFormatText(TypedDict):
    type: Literal["text"]


JsonSchemaFormat = with_config(OPEN)(
    TypedDict(  # functional form: ``schema`` would shadow BaseModel.schema in a class body
        "JsonSchemaFormat",
        {
            "name": str,
            "description": NotRequired[str | None],
            "schema": NotRequired[dict[str, Any] | None],
            "strict": NotRequired[bool | None],
        },
    )
)


@with_config(OPEN)
class ResponseFormatJsonSchema(TypedDict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


@with_config(OPEN)
class ResponseFormatJsonObject(TypedDict):
    type: Literal["json_object"]


ResponseFormat = _tagged(
    "type",
    {
        "text": ResponseFormatText,
        "json_schema": ResponseFormatJsonSchema,
        "json_object": ResponseFormatJsonObject,
    },
)


@with_config(OPEN)
class VoiceRef(TypedDict):
    id: str


@with_config(OPEN)
class AudioOutput(TypedDict):
    voice: _text_or(VoiceRef, "an object with a voice id")
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


@with_config(OPEN)
class Prediction(TypedDict):
    type: Literal["content"]
    content: TextContent


class StreamOptions(_Open):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


# ----------------------------------------------------------------------------- requests

Stop = _text_or(Annotated[list[str], Field(max_length=4)], "an array of strings")  # up to 4


class _Sampling(_Open):
    model: ModelName
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    stop: Stop | None = None
    seed: int | None = None
    user: str | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=0)] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    prediction: Prediction | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = (
        None
    )
    verbosity: Literal["low", "medium", "high"] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: Annotated[list[FunctionDefinition], Field(min_length=1, max_length=128)] | None = (
        None
    )
    function_call: FunctionCallChoice | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    best_of: Annotated[int, Field(ge=0, le=20)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    suffix: str | None = None


class EmbeddingRequest(_Open):
    model: ModelName
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1, le=65536)] | None = None
    user: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
