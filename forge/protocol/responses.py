"""OpenAI Responses request shape (``POST /v1/responses``), typed from OpenAI's OpenAPI spec
(``CreateResponse`` and the input item, content part, tool, tool choice and text format
schemas it refers to), for what the platform serves on its chat path (``store`` and
``previous_response_id`` included: the route stores and loads).

Unlike the chat and Anthropic models, unknown top-level fields are refused: the request
is translated, not forwarded, so a field nothing reads would be dropped without a word.
Spec fields the slice cannot serve (built-in tools, background runs, conversations…)
are a 400 ``unsupported_parameter`` naming the field. An ``item_reference`` input item
is taken here and resolved by the route (an output item of the key's stored responses).
The checks that span fields (``tool_choice`` naming a declared function, a
``function_call_output`` answering a ``function_call`` of the input) raise
``InvalidRequest`` from the model's validators, which pydantic lets through untouched,
so that ``param`` is the client's own path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, NotRequired, TypeAlias

from pydantic import Discriminator, Field, Tag, model_validator, with_config
from typing_extensions import TypedDict

from forge.errors import InvalidRequest
from forge.protocol.openai import (
    OPEN,
    FunctionName,
    ModelName,
    Probability,
    _Open,
    _tagged,
    _text_or,
)

# ----------------------------------------------------------------------------- content parts


@with_config(OPEN)
class InputTextPart(TypedDict):
    type: Literal["input_text"]
    text: str


@with_config(OPEN)
class InputImagePart(TypedDict):
    type: Literal["input_image"]
    image_url: NotRequired[str | None]
    file_id: NotRequired[str | None]
    detail: NotRequired[Literal["auto", "low", "high", "original"] | None]


@with_config(OPEN)
class OutputTextPart(TypedDict):
    type: Literal["output_text"]
    text: str
    annotations: NotRequired[list[dict[str, Any]] | None]
    logprobs: NotRequired[list[dict[str, Any]] | None]


@with_config(OPEN)
class RefusalPart(TypedDict):
    type: Literal["refusal"]
    refusal: str


# ----------------------------------------------------------------------------- input items


@with_config(OPEN)
class InputMessage(TypedDict):
    """``EasyInputMessage`` and ``InputMessage``: ``type`` may be left out."""

    type: NotRequired[Literal["message"]]
    role: Literal["user", "system", "developer"]
    content: InputContent
    status: NotRequired[str | None]


@with_config(OPEN)
class AssistantMessage(TypedDict):
    """An assistant turn: ``EasyInputMessage`` or an earlier ``OutputMessage``."""

    type: NotRequired[Literal["message"]]
    role: Literal["assistant"]
    content: AssistantContent
    id: NotRequired[str | None]
    status: NotRequired[str | None]


@with_config(OPEN)
class FunctionCallItem(TypedDict):
    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1)]
    name: str
    arguments: str
    id: NotRequired[str | None]
    status: NotRequired[str | None]


@with_config(OPEN)
class FunctionCallOutputItem(TypedDict):
    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1, max_length=64)]
    output: FunctionOutput
    id: NotRequired[str | None]
    status: NotRequired[str | None]


@with_config(OPEN)
class ItemReference(TypedDict):
    """``ItemReferenceParam``: an item of a stored response, by its id (the route puts the
    item in its place; ``type`` may be left out or null)."""

    type: NotRequired[Literal["item_reference"] | None]
    id: Annotated[str, Field(min_length=1)]


ITEM_TYPES = ("message", "function_call", "function_call_output", "item_reference")


def is_reference(item: dict[str, Any]) -> bool:
    """An ``item_reference``: so typed, or untyped with an ``id`` and no ``role``."""
    kind = item.get("type")
    return kind == "item_reference" or (kind is None and "role" not in item and "id" in item)


def _item_kind(value: Any) -> str:
    """An item without ``type`` is a message (``EasyInputMessage``), or a reference when it
    has an ``id`` and no ``role``."""
    if not isinstance(value, dict):
        return "literal[?]"
    kind = "item_reference" if is_reference(value) else value.get("type", "message")
    return f"literal[{kind}]" if kind in ITEM_TYPES else "literal[?]"


# ----------------------------------------------------------------------------- tools


@with_config(OPEN)
class FunctionTool(TypedDict):
    type: Literal["function"]
    name: FunctionName
    description: NotRequired[str | None]
    parameters: NotRequired[dict[str, Any] | None]  # a JSON Schema object
    strict: NotRequired[bool | None]


@with_config(OPEN)
class FunctionChoice(TypedDict):
    type: Literal["function"]
    name: str


# ----------------------------------------------------------------------------- text format


@with_config(OPEN)
class FormatText(TypedDict):
    type: Literal["text"]


@with_config(OPEN)
class FormatJsonObject(TypedDict):
    type: Literal["json_object"]


@with_config(OPEN)
class TextParam(TypedDict):
    format: NotRequired[TextFormat | None]
    verbosity: NotRequired[Literal["low", "medium", "high"] | None]


# ----------------------------------------------------------------------------- reasoning

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
SummaryMode = Literal["auto", "concise", "detailed"]


@with_config(OPEN)
class ReasoningParam(TypedDict):
    """``Reasoning``: ``effort`` becomes the chat request's ``reasoning_effort``. A
    ``summary`` (or the deprecated ``generate_summary``) is accepted and none is produced:
    the chat path returns no reasoning to summarise, and OpenAI's own reasoning items may
    carry an empty summary too, so clients already live without one (a 400 would refuse
    the default of clients that ask for ``auto``). ``context`` only chooses which reasoning
    items are replayed, and there are none; a ``mode`` other than ``standard`` is refused
    (``_check_fields``)."""

    effort: NotRequired[ReasoningEffort | None]
    summary: NotRequired[SummaryMode | None]
    generate_summary: NotRequired[SummaryMode | None]
    context: NotRequired[Literal["auto", "current_turn", "all_turns"] | None]
    mode: NotRequired[str | None]


class StreamOptions(_Open):
    include_obfuscation: bool | None = None


# ----------------------------------------------------------------------------- the unions

# Built at run time with ``forge.protocol.openai``'s helpers, and resolved by pydantic when
# the request model is built (annotations are strings here); to mypy, the JSON they take.
if TYPE_CHECKING:
    InputContent: TypeAlias = Any
    AssistantContent: TypeAlias = Any
    FunctionOutput: TypeAlias = Any
    Input: TypeAlias = Any
    ToolChoice: TypeAlias = Any
    TextFormat: TypeAlias = Any
else:

    def _content(**parts: type) -> Any:
        return _text_or(list[_tagged("type", parts)], "an array of content parts")

    InputContent = _content(input_text=InputTextPart, input_image=InputImagePart)
    AssistantContent = _content(
        input_text=InputTextPart, output_text=OutputTextPart, refusal=RefusalPart
    )
    FunctionOutput = _content(input_text=InputTextPart)
    Message = _tagged(
        "role",
        {
            "user": InputMessage,
            "system": InputMessage,
            "developer": InputMessage,
            "assistant": AssistantMessage,
        },
    )
    ItemTag = with_config(OPEN)(TypedDict("ItemTag", {"type": Literal[ITEM_TYPES]}))
    InputItem = Annotated[
        Annotated[Message, Tag("literal[message]")]
        | Annotated[FunctionCallItem, Tag("literal[function_call]")]
        | Annotated[FunctionCallOutputItem, Tag("literal[function_call_output]")]
        | Annotated[ItemReference, Tag("literal[item_reference]")]
        | Annotated[ItemTag, Tag("literal[?]")],
        Discriminator(_item_kind),
    ]
    Input = _text_or(list[InputItem], "an array of input items")
    ToolChoice = _text_or(
        _tagged("type", {"function": FunctionChoice}),
        "an object naming a function",
        text=Literal["none", "auto", "required"],
    )
    FormatJsonSchema = with_config(OPEN)(
        TypedDict(  # functional form: ``schema`` would shadow BaseModel.schema in a class body
            "FormatJsonSchema",
            {
                "type": Literal["json_schema"],
                "name": FunctionName,
                "schema": dict[str, Any],
                "description": NotRequired[str | None],
                "strict": NotRequired[bool | None],
            },
        )
    )
    TextFormat = _tagged(
        "type",
        {"text": FormatText, "json_object": FormatJsonObject, "json_schema": FormatJsonSchema},
    )

# ----------------------------------------------------------------------------- the request

BUILT_IN_TOOLS = (
    "file_search",
    "web_search",
    "web_search_preview",
    "web_search_2025_08_26",
    "web_search_preview_2025_03_11",
    "computer",
    "computer_use_preview",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
)

# CreateResponse fields this slice cannot serve, refused when given a non-default value.
UNSUPPORTED = {
    "background": False,
    "conversation": None,
    "prompt": None,
    "include": None,
    "truncation": "disabled",
    "service_tier": "auto",
    "max_tool_calls": None,
    "top_logprobs": 0,
    "context_management": None,
    "moderation": None,
    "prompt_cache_options": None,
    "prompt_cache_retention": None,
}


def _unsupported(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def _check_fields(body: dict[str, Any]) -> None:
    known = set(CreateResponseRequest.model_fields)
    for field, value in body.items():
        if field in UNSUPPORTED:
            default = UNSUPPORTED[field]
            if value is None or value == default or value == []:
                continue
            raise _unsupported(
                field, f"The parameter '{field}' is not supported on /v1/responses yet."
            )
        if field not in known:
            raise InvalidRequest(
                f"Unknown parameter: '{field}'.", param=field, code="unknown_parameter"
            )
    reasoning = body.get("reasoning")
    mode = reasoning.get("mode") if isinstance(reasoning, dict) else None
    if mode not in (None, "standard"):
        raise _unsupported(
            "reasoning.mode",
            f"reasoning.mode '{mode}' is not supported on /v1/responses: only 'standard'.",
        )
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind != "function":
            what = "Built-in tool" if kind.startswith(BUILT_IN_TOOLS) else "Tool type"
            raise _unsupported(
                f"tools[{i}].type",
                f"{what} '{kind}' is not supported: only tools of type 'function' can be "
                "served, whatever the model.",
            )


class CreateResponseRequest(_Open):
    model: ModelName
    input: Input
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextParam | None = None
    max_output_tokens: Annotated[int, Field(ge=16)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)] | (
        None
    ) = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    user: str | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    reasoning: ReasoningParam | None = None
    # refused unless default (``UNSUPPORTED``); declared so that they are not "unknown"
    background: Any = None
    conversation: Any = None
    prompt: Any = None
    include: Any = None
    truncation: Any = None
    service_tier: Any = None
    max_tool_calls: Any = None
    top_logprobs: Any = None
    context_management: Any = None
    moderation: Any = None
    prompt_cache_options: Any = None
    prompt_cache_retention: Any = None

    @model_validator(mode="before")
    @classmethod
    def _fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _check_fields(data)
        return data

    @model_validator(mode="after")
    def _references(self) -> CreateResponseRequest:
        names = {tool["name"] for tool in self.tools or ()}
        choice = self.tool_choice
        if isinstance(choice, dict) and choice["name"] not in names:
            raise InvalidRequest(
                f"tool_choice names the function '{choice['name']}', which is not in `tools`.",
                param="tool_choice.name",
                code="invalid_value",
            )
        # continuing a conversation, or referring to stored items, a call may be answered
        # that only the stored items hold: the route checks against them once it has
        # them (``check_call_outputs``)
        if (
            isinstance(self.input, list)
            and self.previous_response_id is None
            and not any(is_reference(item) for item in self.input)
        ):
            calls: set[str] = set()
            items: list[dict[str, Any]] = self.input
            for i, item in enumerate(items):
                kind = item.get("type")
                if kind == "function_call":
                    calls.add(item["call_id"])
                elif kind == "function_call_output" and item["call_id"] not in calls:
                    raise InvalidRequest(
                        f"No tool call found for function call output with call_id "
                        f"{item['call_id']}.",
                        param=f"input[{i}].call_id",
                        code="invalid_value",
                    )
        return self
