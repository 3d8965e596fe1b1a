"""A transformers engine on transformers' own continuous batching (CPU, and CUDA when present).

Requests join a running batch through ``ContinuousBatchingManager``; its results arrive on
the asyncio loop through ``register_result_handler`` and are turned into text deltas here,
with stop strings, exact token counts and cancellation. Temperature and top_p apply per
request (transformers' per-request logits processors); temperature 0 is greedy, run as a
vanishing temperature since one batch samples for everyone. A per-request seed is not
supported by the batch's shared generator and is ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from forge.errors import ContextLengthExceeded, ServiceUnavailable
from serve.models.engine import EngineOutput, SamplingParams

GREEDY_TEMPERATURE = 1e-5  # temperature 0 as a vanishing temperature: argmax in practice
HEALTH_POLL_S = 1.0  # how often a waiting request checks that the batch loop still runs


class TransformersEngine:
    def __init__(
        self,
        model: str | Path,
        *,
        num_blocks: int = 256,
        page_size: int = 32,
        max_batch_tokens: int = 1024,
        device: str | None = None,
    ) -> None:
        self.model_path = str(model)
        self._cb_options = {
            "num_blocks": num_blocks,
            "page_size": page_size,
            "max_batch_tokens": max_batch_tokens,
        }
        self._device = device
        self._manager: Any = None
        self.tokenizer: Any = None
        self.context_window = 0

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        import transformers
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_path)
        model = transformers.AutoModelForCausalLM.from_pretrained(self.model_path).to(device)
        model.eval()
        self.context_window = int(model.config.max_position_embeddings)
        # Per-request processors exist only for knobs set (and not to 1.0) at creation.
        generation = transformers.GenerationConfig(
            do_sample=True,
            temperature=0.7,
            top_p=0.95,
            top_k=None,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        self._manager = model.init_continuous_batching(
            generation_config=generation,
            continuous_batching_config=ContinuousBatchingConfig(
                **self._cb_options, per_request_processors=True
            ),
        )
        self._manager.start()

    def healthy(self) -> bool:
        """Whether the batching loop is running (it dies on an engine crash or OOM)."""
        return self._manager is not None and self._manager.is_running()

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True
        )
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def check_fits(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """400 before any work when the prompt, or prompt plus max_tokens, cannot fit."""
        if len(prompt_ids) >= self.context_window:
            raise ContextLengthExceeded(
                f"The prompt has {len(prompt_ids)} tokens; this model's context window is "
                f"{self.context_window}.",
                param="messages",
            )
        if len(prompt_ids) + params.max_tokens > self.context_window:
            raise ContextLengthExceeded(
                f"max_tokens {params.max_tokens} plus the prompt's {len(prompt_ids)} tokens "
                f"exceed the context window of {self.context_window}.",
                param="max_tokens",
            )

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[EngineOutput]:
        if self._manager is None:
            raise ServiceUnavailable("The engine is not started.", retry_after=1)
        self.check_fits(prompt_ids, params)
        results: asyncio.Queue[Any] = asyncio.Queue()
        request_id = self._manager.add_request(
            list(prompt_ids),
            max_new_tokens=params.max_tokens,
            streaming=True,
            temperature=max(params.temperature, GREEDY_TEMPERATURE),
            top_p=params.top_p,
        )
        if request_id is None:
            raise ServiceUnavailable("The engine is not accepting requests.", retry_after=1)
        self._manager.register_result_handler(request_id, results.put_nowait)
        sent = ""
        finished = False
        try:
            while True:
                try:
                    result = await asyncio.wait_for(results.get(), HEALTH_POLL_S)
                except TimeoutError:
                    if not self.healthy():  # never wait on a loop that died: 503, no hang
                        raise ServiceUnavailable(
                            "The model engine stopped; its replica is being replaced.",
                            retry_after=5,
                        ) from None
                    continue
                if result.error:
                    raise ServiceUnavailable(f"The engine failed: {result.error}", retry_after=1)
                tokens = list(result.generated_tokens)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                done = result.is_finished()
                stop_at = _first_stop(text, params.stop, len(sent))
                if stop_at is not None:
                    finished = True
                    yield EngineOutput(
                        text[len(sent) : stop_at], len(prompt_ids), len(tokens), "stop"
                    )
                    return
                if text.endswith("\ufffd") and not done:
                    continue  # half a multi-byte character: wait for the rest
                if done:
                    finished = True
                    reason = "length" if len(tokens) >= params.max_tokens else "stop"
                    yield EngineOutput(text[len(sent) :], len(prompt_ids), len(tokens), reason)
                    return
                if len(text) > len(sent):
                    yield EngineOutput(text[len(sent) :], len(prompt_ids), len(tokens))
                    sent = text
        finally:
            if not finished:
                self._manager.cancel_request(request_id)  # frees the slot and its KV blocks

    async def stop(self) -> None:
        if self._manager is not None:
            await asyncio.to_thread(self._manager.stop, True)
            self._manager = None


def _first_stop(text: str, stops: list[str], searched_up_to: int) -> int | None:
    """Where the earliest stop string begins, looking only where a new one can appear."""
    best = None
    for stop in stops:
        at = text.find(stop, max(0, searched_up_to - len(stop) + 1))
        if at != -1 and (best is None or at < best):
            best = at
    return best
