"""The vLLM engine (GPU nodes; also vLLM's unofficial CPU build, for tests here).

vLLM's ``AsyncLLM`` does the batching, paged KV cache, prefix caching, tensor parallelism
and stop strings; LoRA adapters ride along per request (``LoRARequest``) and are mixed
inside one batch, up to ``max_loras`` at a time. vLLM is an optional extra, imported only
when this engine starts.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from forge.errors import InvalidRequest, ServiceUnavailable
from serve.models.engine import (
    EngineOutput,
    EngineStats,
    SamplingParams,
    TokenizerEncoding,
    check_fits,
)
from serve.structured.spec import Constraint, grammar_error


class VllmEngine(TokenizerEncoding):
    kind = "vllm"
    # vLLM's own structured outputs, on llguidance (``backend: guidance``) like the
    # transformers engine, so both enforce and refuse the same schemas.
    supports_structured_outputs = True

    def __init__(
        self,
        model: str | Path,
        *,
        tensor_parallel_size: int = 1,
        max_loras: int = 4,
        max_lora_rank: int = 16,
        enable_prefix_caching: bool = True,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        engine_args: dict[str, Any] | None = None,
    ) -> None:
        self.model_path = str(model)
        self._args: dict[str, Any] = {
            "model": self.model_path,
            "tensor_parallel_size": tensor_parallel_size,
            "enable_lora": max_loras > 0,
            "max_loras": max(max_loras, 1),
            "max_lora_rank": max_lora_rank,
            "enable_prefix_caching": enable_prefix_caching,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            **(engine_args or {}),
        }
        self._llm: Any = None
        self._loras: dict[str, Any] = {}
        self._lora_ids = itertools.count(1)
        self._in_flight = 0
        self.tokenizer: Any = None
        self.context_window = 0
        self.config: dict[str, Any] = {}

    async def start(self) -> None:
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        given = {k: v for k, v in self._args.items() if v is not None}
        structured = {"backend": "guidance", "disable_any_whitespace": True}
        structured.update(given.pop("structured_outputs_config", None) or {})
        args = AsyncEngineArgs(
            **given, structured_outputs_config=StructuredOutputsConfig(**structured)
        )
        self._llm = AsyncLLM.from_engine_args(args)
        self.tokenizer = self._llm.tokenizer
        model_config = self._llm.model_config
        self.context_window = int(model_config.max_model_len)
        self.config = model_config.hf_config.to_dict()

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[EngineOutput, None]:
        from vllm import SamplingParams as VllmSampling
        from vllm.exceptions import VLLMValidationError
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if self._llm is None:
            raise ServiceUnavailable("The engine is not started.", retry_after=1)
        lora = None
        if adapter is not None:
            lora = self._loras.get(adapter)
            if lora is None:
                raise ServiceUnavailable(f"{adapter!r} is not loaded.", retry_after=1)
        check_fits(len(prompt_ids), params, self.context_window)
        sampling = VllmSampling(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=params.stop or None,
            output_kind=RequestOutputKind.DELTA,
            structured_outputs=_structured(params.constraint),
            # vLLM keeps every special token then; ours drops all but the kept ones
            skip_special_tokens=not params.keep_special,
        )
        request_id = uuid.uuid4().hex
        completion_tokens = 0
        finished = False
        self._in_flight += 1
        try:
            stream = self._llm.generate(
                TokensPrompt(prompt_token_ids=list(prompt_ids)),
                sampling,
                request_id,
                lora_request=lora,
            )
            async for output in stream:
                step = output.outputs[0]
                completion_tokens += len(step.token_ids)
                reason = step.finish_reason if output.finished else None
                if output.finished:
                    finished = True
                    reason = "length" if reason == "length" else "stop"
                yield EngineOutput(step.text, len(prompt_ids), completion_tokens, reason)
        except VLLMValidationError as exc:  # before any token: the request is refused
            if params.constraint is not None:
                raise grammar_error(str(exc), params.constraint.param) from None
            raise InvalidRequest(str(exc)) from None
        except Exception as exc:
            if self._llm.errored:
                raise ServiceUnavailable(
                    "The model engine stopped; its replica is being replaced.", retry_after=5
                ) from exc
            raise
        finally:
            self._in_flight -= 1
            if not finished:
                await self._llm.abort(request_id)  # frees the slot and its KV blocks

    async def load_adapter(self, name: str, path: Path) -> None:
        from vllm.lora.request import LoRARequest

        if name in self._loras:
            return
        request = LoRARequest(name, next(self._lora_ids), str(path))
        await self._llm.add_lora(request)
        self._loras[name] = request

    async def unload_adapter(self, name: str) -> None:
        request = self._loras.pop(name, None)
        if request is not None and self._llm is not None:
            await self._llm.remove_lora(request.lora_int_id)

    def healthy(self) -> bool:
        return self._llm is not None and not self._llm.errored

    def stats(self) -> EngineStats:
        # vLLM schedules inside its engine-core process; the front end sees requests in
        # flight, not the running/waiting split.
        return EngineStats(
            engine=self.kind,
            running=self._in_flight,
            waiting=0,
            adapters=list(self._loras),
            healthy=self.healthy(),
        )

    async def stop(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.to_thread(llm.shutdown)


def _structured(constraint: Constraint | None) -> Any:
    """The constraint as vLLM's ``StructuredOutputsParams`` (its schema, with the
    schema's own ``x-guidance`` options already dropped: the engine's config rules)."""
    if constraint is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(json=constraint.schema)
