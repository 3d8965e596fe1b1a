"""The engine interface every self-hosted model server wraps (transformers now; vLLM next)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["stop", "length"]


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(256, ge=1, description="Most tokens to generate.")
    stop: list[str] = Field(default_factory=list, description="Strings that end generation.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy; OpenAI's default 1.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")


@dataclass(slots=True)
class EngineOutput:
    """One streamed step: the new text, and the counts so far (exact: the engine's own tokens)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None


class Engine(Protocol):
    async def start(self) -> None: ...

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]: ...

    def generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[EngineOutput]:
        """Stream the completion; closing the iterator cancels the request and frees its slot."""
        ...

    async def stop(self) -> None: ...
