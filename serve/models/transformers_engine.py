"""A transformers engine on transformers' own continuous batching (CPU, and CUDA when present).

Requests join a running batch through ``ContinuousBatchingManager``; its results arrive on
the asyncio loop through ``register_result_handler`` and are turned into text deltas here,
with stop strings, exact token counts and cancellation. Temperature and top_p apply per
request (transformers' per-request logits processors); temperature 0 is greedy, run as a
vanishing temperature since one batch samples for everyone. A per-request seed is
honoured by ``serve.models.sampling`` (Gumbel-max with noise seeded per request and
position), which also applies top_p only to the rows that ask for it.

LoRA adapters: one padded batch mixes them, each row through its own adapter
(``serve.models.multi_lora``: gathered batched matmuls; weights are read off the loop's
thread, only their install pauses it). With continuous batching for the base model,
adapter requests go to a padded batch beside it over the same model and weights.

Structured outputs (``response_format``: ``serve.structured``): a request's constraint is
compiled to an llguidance matcher off the loop (cached per schema), and our batches mask
its row's logits each step. Beside transformers' continuous batch, constrained requests
go to the padded side batch too (no grammar processor for continuous batching yet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, Literal

from forge.errors import ServiceUnavailable
from serve.models.batch_loop import BatchLoop, BatchLoopStopped
from serve.models.engine import (
    EngineOutput,
    EngineStats,
    IncrementalDecoder,
    SamplingParams,
    TokenizerEncoding,
    check_fits,
    first_stop,
    stop_prefix_len,
)
from serve.models.multi_lora import read_adapter
from serve.models.padded_batching import PaddedBatcher
from serve.models.sampling import add_request_sampling
from serve.models.slot_batching import SlotBatcher
from serve.models.slot_decoder import unsupported_reason
from serve.models.stream_watch import StreamWatch, next_result
from serve.models.torch_threads import available_memory, run_in_own_thread
from serve.structured.grammar import GrammarCache

log = logging.getLogger(__name__)
# The slot batch's KV cache share of free memory (on CUDA: the rest is for prefill
# activations and CUDA graphs).
KV_SHARE_CUDA, KV_SHARE_CPU = 0.8, 0.25
GREEDY_TEMPERATURE = 1e-5  # temperature 0 as a vanishing temperature: argmax in practice
CPU_BATCHING = {"num_blocks": 256, "page_size": 32, "max_batch_tokens": 1024}


class TransformersEngine(TokenizerEncoding):
    kind = "transformers"
    supports_structured_outputs = True

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batching: Literal["auto", "slots", "padded", "continuous"] = "auto",
        max_batch: int = 64,
        max_model_len: int | None = None,
        max_prefill_tokens: int = 8192,
        cuda_graphs: bool | None = None,
        **continuous: Any,
    ) -> None:
        """``batching``: our slot batch (``serve.models.slot_batching``: fixed shapes,
        CUDA graphs on CUDA; Llama-family models), our padded batch (any model), or
        transformers' continuous batching. ``auto``: slots where the model allows, else
        padded on the CPU and continuous on CUDA. ``max_batch``: rows of our batches;
        ``max_model_len``: a context window below the model's (smaller KV slots);
        ``max_prefill_tokens``: prompt tokens our batches prefill in one forward;
        ``cuda_graphs``: the slot batch's, default on CUDA.
        ``continuous``: ContinuousBatchingConfig fields (num_blocks, page_size,
        max_batch_tokens, use_cuda_graph, ...); on the CPU its cache is sized by
        ``CPU_BATCHING`` unless they say otherwise (transformers' own sizing needs
        psutil)."""
        self.model_path = str(model)
        self._mode = batching
        self._max_batch = max_batch
        self._max_model_len = max_model_len
        self._max_prefill_tokens = max_prefill_tokens
        self._cuda_graphs = cuda_graphs
        self._batching = continuous
        self._device = device
        self._dtype = dtype
        self._model: Any = None
        self._batch: Any = None  # the base model's: padded, or transformers' continuous
        self._adapters_batch: BatchLoop | None = (
            None  # adapter and constrained rows' (``_side_batch``)
        )
        self._adapters: set[str] = set()  # installed in it
        self._watch = StreamWatch()  # fails the streams of a loop that stopped silently
        self._grammars: GrammarCache | None = None  # on the first constrained request
        self._grammars_lock = asyncio.Lock()
        self.tokenizer: Any = None
        self.context_window = 0
        self.config: dict[str, Any] = {}

    async def start(self) -> None:
        await run_in_own_thread(self._load)  # its OpenMP team ends with it

    def _load(self) -> None:
        import torch
        import transformers

        device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cpu":
            self._batching = {**CPU_BATCHING, **self._batching}
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_path)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=getattr(torch, self._dtype) if self._dtype else "auto"
        ).to(device)
        model.eval()
        self._model = model
        self.config = model.config.to_dict()
        self.context_window = int(model.config.max_position_embeddings)
        if self._max_model_len:
            self.context_window = min(self.context_window, self._max_model_len)
        self._batch = self._start_batching(model, self._choose_batching(model, device))

    def _eos_ids(self, model: Any) -> list[int]:
        """Every id that ends a turn: the generation config may list several (Llama 3's
        <|eot_id|>, Gemma's <end_of_turn>), besides the tokenizer's own."""
        configured = getattr(model.generation_config, "eos_token_id", None)
        ids = configured if isinstance(configured, list) else [configured]
        ids = [*ids, self.tokenizer.eos_token_id]
        return sorted({int(i) for i in ids if i is not None})

    def _choose_batching(self, model: Any, device: str) -> str:
        if self._mode != "auto":
            if self._mode == "slots" and (reason := unsupported_reason(model)):
                raise ValueError(f"batching 'slots' cannot run this model: {reason}")
            return self._mode
        if unsupported_reason(model) is None:
            return "slots"
        return "padded" if device == "cpu" else "continuous"

    def _start_batching(self, model: Any, batching: str) -> Any:
        loop = {
            "eos_token_ids": self._eos_ids(model),
            "max_batch": self._max_batch,
            "max_prefill_tokens": self._max_prefill_tokens,
        }
        batcher: BatchLoop
        if batching == "slots":
            batcher = SlotBatcher(
                model,
                max_len=self.context_window,
                kv_bytes=self._kv_budget(model.device),
                graphs=self._cuda_graphs,
                **loop,
            )
            if batcher.max_len < self.context_window:
                log.info(
                    "KV slots fit %d tokens per request for %d rows (the model's window is "
                    "%d): longer requests are refused; lower max_batch to serve them",
                    batcher.max_len,
                    self._max_batch,
                    self.context_window,
                )
            self.context_window = batcher.max_len
        elif batching == "padded":
            batcher = PaddedBatcher(model, **loop)
        else:
            return self._start_continuous_batching(model)
        batcher.start()
        return batcher

    def _kv_budget(self, device: Any) -> int:
        """Bytes the slot batch's KV cache may take: ``max_memory_percent`` (a share)
        of what is free now, the weights loaded (CUDA), or of available memory (CPU).
        The rest is for prefill (capped by ``max_prefill_tokens``) and CUDA graphs."""
        import torch

        on_cuda = device.type == "cuda"
        share = float(
            self._batching.get("max_memory_percent", KV_SHARE_CUDA if on_cuda else KV_SHARE_CPU)
        )
        if on_cuda:
            free, _ = torch.cuda.mem_get_info(device)
        else:
            free = available_memory()
        return int(free * share)

    def _start_continuous_batching(self, model: Any) -> Any:
        import transformers
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        # Per-request processors exist only for knobs set (and not to 1.0) at creation:
        # temperature here; top-p and seed are added by add_request_sampling.
        generation = transformers.GenerationConfig(
            do_sample=True,
            temperature=0.7,
            top_p=None,
            top_k=None,
            eos_token_id=self._eos_ids(model),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        manager = model.init_continuous_batching(
            generation_config=generation,
            continuous_batching_config=ContinuousBatchingConfig(
                **self._batching, per_request_processors=True
            ),
        )
        add_request_sampling(manager)
        manager.start()
        return manager

    async def load_adapter(self, name: str, path: Path) -> None:
        if name in self._adapters:
            return
        batcher = self._side_batch()
        weights = await run_in_own_thread(read_adapter, path)  # streams run on meanwhile
        await _between_steps(batcher, lambda: batcher.model.add(name, weights))
        self._adapters.add(name)

    def _side_batch(self) -> BatchLoop:
        """The batch that adapter and constrained requests join: the base batch itself
        when it is ours; beside transformers' continuous batch (which cannot mix
        adapters: a step is one packed sequence; nor mask a row's logits by a grammar)
        a padded one over the same model, started on first use. Its
        LoRA wrappers act only on its own thread's rows, so the continuous batch's
        forwards through the shared layers stay the base model's."""
        if self._adapters_batch is None:
            if isinstance(self._batch, BatchLoop):
                self._adapters_batch = self._batch
            else:
                self._adapters_batch = PaddedBatcher(
                    self._model, eos_token_ids=self._eos_ids(self._model)
                )
                self._adapters_batch.start()
        return self._adapters_batch

    async def unload_adapter(self, name: str) -> None:
        batcher = self._adapters_batch
        if name in self._adapters and batcher is not None:
            self._adapters.discard(name)
            await _between_steps(batcher, lambda: batcher.remove_adapter(name))

    def _loops(self) -> list[Any]:
        """Each batching loop once."""
        loops = [self._batch, self._adapters_batch]
        return list({id(m): m for m in loops if m is not None}.values())

    def healthy(self) -> bool:
        """Whether every batching loop runs (one dies on an engine crash or OOM)."""
        return self._batch is not None and all(m.is_running() for m in self._loops())

    def stats(self) -> EngineStats:
        running = waiting = 0
        kv_tokens: int | None = 0
        capacities: list[int | None] = []
        for manager in self._loops():
            if isinstance(manager, BatchLoop):
                running += manager.running
                waiting += manager.waiting
                kv_tokens = None if kv_tokens is None else kv_tokens + manager.kv_tokens
                capacities.append(manager.kv_capacity_tokens)
                continue
            kv_tokens = None  # transformers' continuous batching keeps its own paged cache
            scheduler = getattr(getattr(manager, "batch_processor", None), "scheduler", None)
            running += len(getattr(scheduler, "active_requests", ()))
            waiting += len(getattr(scheduler, "waiting_requests", ()))
            waiting += manager.input_queue.qsize() if hasattr(manager, "input_queue") else 0
        return EngineStats(
            engine=self.kind,
            running=running,
            waiting=waiting,
            adapters=sorted(self._adapters),
            healthy=self.healthy(),
            kv_tokens=kv_tokens,
            kv_capacity_tokens=(
                sum(c for c in capacities if c is not None)
                if capacities and None not in capacities
                else None
            ),
        )

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None
    ) -> AsyncGenerator[EngineOutput, None]:
        manager = self._batch if adapter is None else self._adapters_batch
        if manager is None or (adapter is not None and adapter not in self._adapters):
            raise ServiceUnavailable(
                "The engine is not started." if adapter is None else f"{adapter!r} is not loaded.",
                retry_after=1,
            )
        check_fits(len(prompt_ids), params, self.context_window)
        grammar = None
        if params.constraint is not None:
            grammar = await (await self._grammar_cache()).acquire(params.constraint)  # may 400
            if not isinstance(manager, BatchLoop):
                manager = self._side_batch()
        results: asyncio.Queue[Any] = asyncio.Queue()
        request_id = _submit(manager, prompt_ids, params, results.put_nowait, adapter, grammar)
        self._watch.add(results, manager)
        decoder = IncrementalDecoder(self.tokenizer, params.keep_special)
        text, sent, seen = "", 0, 0
        finished = False  # by the engine; a stop string ends it here and cancels it there
        try:
            while True:
                result = await next_result(results)
                if result.error:
                    raise ServiceUnavailable(f"The engine failed: {result.error}", retry_after=1)
                tokens = result.generated_tokens
                text += decoder.push(list(tokens[seen:]))
                seen = len(tokens)
                done = result.is_finished()
                if done:
                    text += decoder.flush()
                stop_at = first_stop(text, params.stop, sent)
                if stop_at is not None:
                    yield EngineOutput(text[sent:stop_at], len(prompt_ids), seen, "stop")
                    return
                if done:
                    finished = True
                    complete = getattr(result, "complete", False)  # a constrained output's end
                    reason = "length" if seen >= params.max_tokens and not complete else "stop"
                    yield EngineOutput(text[sent:], len(prompt_ids), seen, reason)
                    return
                ready = len(text) - stop_prefix_len(text, params.stop)  # maybe a stop's start
                if ready > sent:
                    yield EngineOutput(text[sent:ready], len(prompt_ids), seen)
                    sent = ready
        finally:
            self._watch.discard(results)
            if not finished:
                manager.cancel_request(request_id)  # frees the slot and its KV blocks

    async def _grammar_cache(self) -> GrammarCache:
        """This model's compiled grammars: its tokenizer for llguidance (built once, off
        the loop), over the logits' width and every end-of-turn id."""
        if self._grammars is None:
            async with self._grammars_lock:
                if self._grammars is None:
                    model = self._model
                    self._grammars = await asyncio.to_thread(
                        GrammarCache.from_hf,
                        self.tokenizer,
                        n_vocab=_logits_width(model),
                        eos_ids=self._eos_ids(model),
                    )
        return self._grammars

    async def stop(self) -> None:
        managers = self._loops()
        self._batch = self._adapters_batch = None
        self._adapters.clear()
        for manager in managers:
            await asyncio.to_thread(manager.stop, True)


async def _between_steps(batcher: BatchLoop, change: Any) -> None:
    """Change our batch's model on its loop's thread; 503 if that loop is gone.
    Shielded: a caller cancelled meanwhile (a client leaving, a timed-out prune) must not
    cancel the change itself, or an unload would be skipped and the old weights stay."""
    try:
        await asyncio.shield(asyncio.wrap_future(batcher.call(change)))
    except BatchLoopStopped:
        raise ServiceUnavailable(
            "The model engine stopped; its replica is being replaced.", retry_after=5
        ) from None


def _logits_width(model: Any) -> int:
    """How many logits the model emits a step (its output embedding's rows: at least the
    tokenizer's vocabulary, often padded beyond it)."""
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def _submit(
    manager: Any,
    prompt_ids: list[int],
    params: SamplingParams,
    handler: Any,
    adapter: str | None,
    grammar: Any = None,
) -> str:
    """Queue a request on any batch; ``handler`` gets each step's result. Only ours take
    an adapter (per row) or a grammar; a continuous batch serves the base model."""
    if isinstance(manager, BatchLoop):
        return manager.submit(prompt_ids, params, handler, adapter, grammar)
    assert grammar is None, "constrained requests go to our batches"
    seeded = {} if params.seed is None else {"seed": params.seed}
    request_id = manager.add_request(
        list(prompt_ids),
        max_new_tokens=params.max_tokens,
        streaming=True,
        temperature=max(params.temperature, GREEDY_TEMPERATURE),
        top_p=params.top_p,
        **seeded,
    )
    if request_id is None:
        raise ServiceUnavailable("The engine is not accepting requests.", retry_after=1)
    manager.register_result_handler(request_id, handler)
    return request_id
