"""The batching loop the transformers engine's own batches share: one thread, one batch.

A subclass says how its batch holds the KV cache (``PaddedBatcher``: one left-padded
``DynamicCache``; ``SlotBatcher``: fixed per-request slots, CUDA graphs); this class owns
the rest: the queue of arrivals, cancellation, sampling (``row_sampling``: each row with
its own temperature, top_p and seed, so a seeded request repeats whatever else is in
the batch), delivery of each step's tokens to the requests' event loops, and calls run
between two steps where the model may change (loading an adapter).

Each row also runs through its own LoRA adapter, if any (``MultiLoraModel``): requests for
different adapters and for the base model share one batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from serve.models.engine import SamplingParams
from serve.models.multi_lora import MultiLoraModel
from serve.models.row_sampling import sample_rows
from serve.structured.mask import GrammarMask, consume

log = logging.getLogger(__name__)
T = TypeVar("T")


class BatchLoopStopped(RuntimeError):
    """The loop is gone (stopped, or crashed): what was asked of it will not happen."""


@dataclass(slots=True)
class StepResult:
    """What a request's handler receives each step (the shape the engine reads from
    transformers' continuous batching, so one engine loop serves both)."""

    generated_tokens: list[int]
    finished: bool = False
    error: str | None = None
    complete: bool = False  # a constrained row's output matched its grammar to the end

    def is_finished(self) -> bool:
        return self.finished


@dataclass(slots=True)
class Request:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    handler: Callable[[StepResult], None]
    loop: asyncio.AbstractEventLoop
    adapter: str | None = None
    generator: torch.Generator | None = None
    grammar: Any = None  # an llguidance matcher (``serve.structured``): the output's constraint
    generated: list[int] = field(default_factory=list)
    length: int = 0  # real tokens in the cache for this row = the next token's position


class BatchLoop:
    """Subclasses implement ``_prefill`` (add arrivals to the batch and sample their first
    token), ``_step`` (one token for every row) and ``_cut`` (keep only some rows)."""

    thread_name = "batch-loop"

    def __init__(
        self,
        model: Any,
        *,
        eos_token_ids: list[int],
        max_batch: int = 64,
        max_prefill_tokens: int = 8192,
    ) -> None:
        """``max_prefill_tokens``: prompt tokens prefilled in one forward (a longer
        prompt goes alone): its activations and temporary cache are not in any budget."""
        self.model = MultiLoraModel(model)
        self.max_prefill_tokens = max_prefill_tokens
        self._held: Request | None = None  # taken from the queue, left for the next prefill
        # Prefill needs the last position's logits only: [rows, prompt, vocab] of them
        # would be GiBs for a batch of long prompts over a 128k vocabulary.
        keeps = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._last_logits_only = {"logits_to_keep": 1} if keeps else {}
        self.eos_token_ids = set(eos_token_ids)
        self.max_batch = max_batch
        self._live: set[str] = set()  # submitted, not finished: what a cancel can hit
        self._pending: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future]] = (
            queue.SimpleQueue()
        )
        self._calls_lock = threading.Lock()
        self._calls_closed = False
        self._cancelled: set[str] = set()
        self._rows: list[Request] = []
        self._arriving: list[Request] = []  # being prefilled
        self._ids = itertools.count()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self._grammar_mask: GrammarMask | None = None  # on the first constrained row

    # The interface the engine uses.
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def submit(
        self,
        prompt: list[int],
        params: SamplingParams,
        handler: Callable[[StepResult], None],
        adapter: str | None = None,
        grammar: Any = None,
    ) -> str:
        """Queue a request (through ``adapter``, which must be loaded); ``handler`` runs on
        the caller's event loop with each step; ``grammar``: an llguidance matcher of this
        request's own that its tokens must follow."""
        if adapter is not None and adapter not in self.model.adapters:
            raise KeyError(f"adapter {adapter!r} is not loaded")
        request_id = f"req-{next(self._ids)}"
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.model.device).manual_seed(params.seed)
        self._live.add(request_id)
        loop = asyncio.get_running_loop()
        self._pending.put(
            Request(request_id, list(prompt), params, handler, loop, adapter, generator, grammar)
        )
        self._wake.set()
        return request_id

    def cancel_request(self, request_id: str) -> None:
        """Stop a request; a no-op for one that has already finished."""
        if request_id in self._live:
            self._cancelled.add(request_id)
            self._wake.set()

    def call(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the loop's thread between two steps, where it may change the
        model (load or unload an adapter)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._calls_lock:  # no call queued after the loop's last drain
            if self._calls_closed or not self.is_running():
                error = BatchLoopStopped(f"the batch loop is not running: {self.error}")
                future.set_exception(error)
                return future
            self._calls.put((fn, future))
        self._wake.set()
        return future

    def remove_adapter(self, name: str) -> None:
        """Unload ``name``; call it through ``call``. A row still on it (its client's
        lease ended before its cancel arrived) ends with an error instead of running on
        through weights that are gone."""
        orphans = [r for r in self._rows if r.adapter == name]
        for row in orphans:
            self._deliver(row, StepResult(list(row.generated), True, f"{name!r} was unloaded"))
        self._drop({r.request_id for r in orphans})
        self.model.remove(name)

    @property
    def running(self) -> int:
        return len(self._rows)

    @property
    def kv_tokens(self) -> int:
        """Tokens the running rows hold in the cache (read from any thread: a copy)."""
        return sum(row.length for row in list(self._rows))

    @property
    def kv_capacity_tokens(self) -> int | None:
        """Tokens the cache allocated now can hold (None: it grows with the batch)."""
        return None

    @property
    def waiting(self) -> int:
        return self._pending.qsize() + (self._held is not None)

    def stop(self, block: bool = True) -> None:
        self._stopping = True
        self._wake.set()
        if block and self._thread is not None:
            self._thread.join(timeout=30)

    # What a batch does with its cache.
    def _prefill(self, arrivals: list[Request]) -> None:
        raise NotImplementedError

    def _step(self) -> None:
        raise NotImplementedError

    def _cut(self, keep: list[int]) -> list[Request]:
        """Keep rows ``keep`` (indices into ``_rows``, ascending) and their cache; the
        rows in their new order."""
        raise NotImplementedError

    # The loop.
    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while not self._stopping:
                    self._run_calls()
                    self._drop(self._cancelled)
                    self._admit()
                    if not self._rows:
                        self._wake.wait(0.5)
                        self._wake.clear()
                        continue
                    self._step()
        except Exception as exc:  # the engine answers 503 and Serve replaces the replica
            self.error = f"{type(exc).__name__}: {exc}"
            admitted = {id(r) for r in self._rows}
            arriving = [r for r in self._arriving if id(r) not in admitted]
            for row in [*self._rows, *arriving]:
                self._deliver(row, StepResult(list(row.generated), True, self.error))
        finally:
            with self._calls_lock:
                self._calls_closed = True
            self._fail_calls(BatchLoopStopped(f"the batch loop stopped: {self.error}"))

    def _queued_calls(self) -> Iterator[tuple[Callable[[], Any], concurrent.futures.Future]]:
        """Take the queued calls that nobody has cancelled, one at a time."""
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                yield fn, future

    def _run_calls(self) -> None:
        for fn, future in self._queued_calls():
            try:
                future.set_result(fn())
            except Exception as exc:  # the caller's error (a bad adapter), not the loop's
                future.set_exception(exc)

    def _fail_calls(self, error: Exception) -> None:
        for _, future in self._queued_calls():
            future.set_exception(error)

    def _admit(self) -> None:
        """Prefill what waits (as many as fit), together, and add it to the batch."""
        arrivals: list[Request] = []
        tokens = 0
        while len(self._rows) + len(arrivals) < self.max_batch:
            request, self._held = self._held, None
            if request is None:
                try:
                    request = self._pending.get_nowait()
                except queue.Empty:
                    break
            if request.request_id in self._cancelled:
                self._cancelled.discard(request.request_id)
                self._live.discard(request.request_id)
                continue
            if request.adapter is not None and request.adapter not in self.model.adapters:
                error = f"{request.adapter!r} was unloaded"
                self._deliver(request, StepResult([], True, error))
                self._live.discard(request.request_id)
                continue
            if arrivals and tokens + len(request.prompt) > self.max_prefill_tokens:
                self._held = request  # first in the next prefill
                break
            tokens += len(request.prompt)
            arrivals.append(request)
        if arrivals:
            self._arriving = arrivals  # a crash now must answer them too
            self._prefill(arrivals)
            self._arriving = []

    def _prefill_forward(self, arrivals: list[Request]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """One forward over the new prompts, left-padded to the longest: the last
        position's logits, the new rows' ``DynamicCache`` and their attention mask."""
        from transformers import DynamicCache

        device = self.model.device
        width = max(len(r.prompt) for r in arrivals)
        ids = torch.zeros(len(arrivals), width, dtype=torch.long, device=device)
        mask = torch.zeros(len(arrivals), width, dtype=torch.long, device=device)
        for i, r in enumerate(arrivals):
            ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt, device=device)
            mask[i, width - len(r.prompt) :] = 1
            r.length = len(r.prompt)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(
            [r.adapter for r in arrivals],
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            **self._last_logits_only,
        ).logits
        return logits[:, -1, :], cache, mask

    def _sample(self, logits: torch.Tensor, rows: list[Request]) -> list[int]:
        """Each row's next token; constrained rows choose among what their grammar allows
        (masked in ``logits`` before sampling, so top_p and seeds work as ever)."""
        constrained = [i for i, r in enumerate(rows) if r.grammar is not None]
        if constrained:
            if self._grammar_mask is None:
                self._grammar_mask = GrammarMask(self.max_batch, logits.shape[-1])
            self._grammar_mask.apply(logits, constrained, [rows[i].grammar for i in constrained])
        return sample_rows(logits, [r.params for r in rows], [r.generator for r in rows])

    def _advance(self, rows: list[Request], tokens: list[int]) -> None:
        """Append each row's token and deliver the step: one callback per event loop, not
        one per row (a cross-thread wake-up each), then drop the rows that finished."""
        done: set[str] = set()
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Callable, StepResult]]] = {}
        for row, token in zip(rows, tokens, strict=True):
            row.generated.append(token)
            complete, error = False, None
            if row.grammar is not None:
                complete, error = consume(row.grammar, token, self.eos_token_ids)
            finished = (
                complete
                or error is not None
                or token in self.eos_token_ids
                or len(row.generated) >= row.params.max_tokens
            )
            by_loop.setdefault(row.loop, []).append(
                (row.handler, StepResult(list(row.generated), finished, error, complete))
            )
            if finished:
                done.add(row.request_id)
        for loop, deliveries in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is gone
                loop.call_soon_threadsafe(_deliver_all, deliveries)
        self._drop(done)

    def _drop(self, request_ids: set[str]) -> None:
        """Cut finished or cancelled rows out of the batch."""
        if not request_ids:
            return
        # One look per row: ``_cancelled`` grows on the event loop's thread meanwhile,
        # and a cancel that lands after its row was kept must stay for the next step.
        keep, gone = [], set()
        for i, r in enumerate(self._rows):
            if r.request_id in request_ids:
                gone.add(r.request_id)
            else:
                keep.append(i)
        if gone:
            self._cancelled -= gone
            self._live -= gone
            self._rows = self._cut(keep)

    @staticmethod
    def _deliver(row: Request, result: StepResult) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone
            row.loop.call_soon_threadsafe(row.handler, result)


def _deliver_all(deliveries: list[tuple[Callable[[StepResult], None], StepResult]]) -> None:
    for handler, result in deliveries:
        try:
            handler(result)
        except Exception:  # one broken handler must not starve the step's other requests
            log.exception("a request's result handler failed")
