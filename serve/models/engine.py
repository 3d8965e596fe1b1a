"""The engine interface every self-hosted model server wraps: transformers or vLLM.

Small on purpose: the model server (``serve.models.server``) turns OpenAI requests into
token ids and sampling parameters, an engine turns those into streamed text, and the
adapter cache (``serve.models.adapters``) decides which LoRA adapters an engine holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from serve.structured.spec import Constraint

FinishReason = Literal["stop", "length"]
E = TypeVar("E")


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    max_tokens: int = Field(256, ge=1, description="Most tokens to generate.")
    stop: list[str] = Field(default_factory=list, description="Strings that end generation.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy; OpenAI's default 1.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int | None = Field(
        None, description="Makes sampling repeatable: the same seed gives the same tokens."
    )
    keep_special: tuple[int, ...] = Field(
        (),
        description="Special tokens kept in the text (a model's tool-call markers, where "
        "they are special tokens); the others are dropped as usual.",
    )
    constraint: Constraint | None = Field(
        None,
        exclude=True,
        description="What the output must match (``response_format``); only for engines "
        "with ``supports_structured_outputs``.",
    )


@dataclass(slots=True)
class EngineOutput:
    """One streamed step: the new text, and the counts so far (exact: the engine's own tokens)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None


class EngineStats(BaseModel):
    """What `forge status` shows per replica."""

    engine: str
    running: int = Field(description="Requests generating now.")
    waiting: int = Field(description="Requests queued for a batch slot (queue depth).")
    adapters: list[str] = Field(default_factory=list, description="LoRA adapters loaded.")
    healthy: bool = True
    kv_tokens: int | None = Field(
        None, description="Tokens the running requests hold in the KV cache (None: not known)."
    )
    kv_capacity_tokens: int | None = Field(
        None, description="Tokens the KV cache allocated now can hold (None: it grows freely)."
    )


class Engine(Protocol):
    """A generating engine. ``adapter`` names a LoRA adapter loaded with ``load_adapter``."""

    kind: str
    context_window: int
    config: dict[str, Any]  # the model's config.json (what adapters are checked against)
    # Enforces ``SamplingParams.constraint`` (``response_format`` json_object/json_schema);
    # the model server refuses one with a 400 for an engine without it.
    supports_structured_outputs: bool

    async def start(self) -> None: ...

    def encode_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]: ...

    @property
    def chat_template(self) -> str: ...

    def special_ids(self, texts: tuple[str, ...]) -> tuple[int, ...]: ...

    def encode_text(self, text: str) -> list[int]: ...

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[EngineOutput, None]:
        """Stream the completion; closing the iterator cancels the request and frees its slot."""
        ...

    async def load_adapter(self, name: str, path: Path) -> None: ...

    async def unload_adapter(self, name: str) -> None: ...

    def healthy(self) -> bool: ...

    def stats(self) -> EngineStats: ...

    async def stop(self) -> None: ...


class StartOnce(Generic[E]):
    """Starts an engine on first use, once, however many requests arrive together; after
    that a request pays one attribute check, no lock."""

    def __init__(self, engine: E) -> None:
        self.engine = engine
        self.started = False
        self._lock = asyncio.Lock()

    async def __call__(self) -> E:
        if not self.started:
            async with self._lock:
                if not self.started:
                    await self.engine.start()
                    self.started = True
        return self.engine


class TokenizerEncoding:
    """Prompt encoding through a Hugging Face tokenizer and its chat template."""

    tokenizer: Any

    def encode_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=True, add_generation_prompt=True
        )
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def special_ids(self, texts: tuple[str, ...]) -> tuple[int, ...]:
        """The ids of those of ``texts`` that are special tokens of this tokenizer."""
        specials = special_ids(self.tokenizer)
        return tuple(specials[t] for t in texts if t in specials)

    @property
    def chat_template(self) -> str:
        """The template's source (all of them, for a tokenizer with several)."""
        template = getattr(self.tokenizer, "chat_template", None) or ""
        return "\n".join(template.values()) if isinstance(template, dict) else str(template)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)


class IncrementalDecoder:
    """The text of a growing list of token ids, a delta at a time, without decoding the
    whole list at every step (vLLM's prefix/read offsets): decode a short window and emit
    what it adds; hold back while the window ends in half a UTF-8 character."""

    def __init__(self, tokenizer: Any, keep_special: tuple[int, ...] = ()) -> None:
        self._decode = _fast_decode(tokenizer)
        self._drop: frozenset[int] = frozenset()
        if keep_special:  # special tokens are text here, all but these dropped first
            self._drop = frozenset(special_ids(tokenizer).values()) - set(keep_special)
            decode = _fast_decode(tokenizer, skip_special_tokens=False)
            self._decode = lambda ids: decode([i for i in ids if i not in self._drop])
        self._tokens: list[int] = []
        self._prefix = 0  # window start: a few tokens of context before the new ones
        self._read = 0  # tokens whose text has been emitted

    def push(self, new_tokens: list[int]) -> str:
        self._tokens.extend(new_tokens)
        emitted = self._decode(self._tokens[self._prefix : self._read])
        window = self._decode(self._tokens[self._prefix :])
        if len(window) <= len(emitted) or window.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._tokens)
        return window[len(emitted) :]

    def flush(self) -> str:
        """What is held back at the end (a trailing half character included)."""
        emitted = self._decode(self._tokens[self._prefix : self._read])
        window = self._decode(self._tokens[self._prefix :])
        self._prefix = self._read = len(self._tokens)
        return window[len(emitted) :] if len(window) > len(emitted) else ""


def special_ids(tokenizer: Any) -> dict[str, int]:
    """The tokenizer's special tokens (added tokens marked special), text to id."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return {token.content: i for i, token in added.items() if getattr(token, "special", False)}


def _fast_decode(tokenizer: Any, skip_special_tokens: bool = True) -> Callable[[list[int]], str]:
    """``tokenizer.decode(ids, skip_special_tokens=True)``, straight through the Rust
    tokenizer where transformers' wrapper would add nothing (no clean-up of spaces, no
    override): 0.8 instead of 3.3 µs a call, twice per streamed token."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # another transformers layout: the wrapper it is
        TokenizersBackend = None
    backend = getattr(tokenizer, "_tokenizer", None)
    plain = TokenizersBackend is not None and (
        type(tokenizer)._decode is TokenizersBackend._decode
        and type(tokenizer).decode is TokenizersBackend.decode
    )
    if backend is not None and plain and not tokenizer.clean_up_tokenization_spaces:
        return lambda ids: backend.decode(ids, skip_special_tokens=skip_special_tokens)
    # Without clean-up: it rewrites spaces around punctuation across the whole text
    # (WordPiece-era), which a window of the text cannot reproduce piece by piece.
    return lambda ids: tokenizer.decode(
        ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
    )


def first_stop(text: str, stops: list[str], searched_up_to: int) -> int | None:
    """Where the earliest stop string begins, looking only where a new one can appear."""
    best = None
    for stop in stops:
        at = text.find(stop, max(0, searched_up_to - len(stop) + 1))
        if at != -1 and (best is None or at < best):
            best = at
    return best


def stop_prefix_len(text: str, stops: list[str]) -> int:
    """How much of the end of ``text`` could be the start of a stop string: held back
    from the stream until the next tokens tell, so no part of a stop reaches the client."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def check_fits(
    prompt_len: int, params: SamplingParams, context_window: int, prompt_param: str = "messages"
) -> None:
    """400 before any work when the prompt is empty, or it (plus max_tokens) cannot fit;
    ``prompt_param``: the request field holding the prompt."""
    from forge.errors import ContextLengthExceeded, InvalidRequest

    if prompt_len == 0:
        raise InvalidRequest("The prompt is empty.", param=prompt_param)
    if prompt_len >= context_window:
        raise ContextLengthExceeded(
            f"The prompt has {prompt_len} tokens; this model's context window is {context_window}.",
            param=prompt_param,
        )
    if prompt_len + params.max_tokens > context_window:
        raise ContextLengthExceeded(
            f"max_tokens {params.max_tokens} plus the prompt's {prompt_len} tokens "
            f"exceed the context window of {context_window}.",
            param="max_tokens",
        )
