"""A batch where every request owns a KV slot, decoded in fixed shapes (CUDA graphs on GPU).

Row i of the batch is slot i of a ``SlotCache``; a step runs ``SlotDecoder`` over rows
0..n-1, each writing its new token's K/V at its own position, so rows of any lengths
share a step without padding and nothing is re-allocated per step. On CUDA the step is
replayed from captured graphs (``serve.models.cuda_graphs``), one per bucket of rows and
columns; elsewhere it runs eagerly. Measured on this CPU, tiny model, one step: 1.3-1.6x
faster than the model's forward over a ``DynamicCache`` (bench/README.md).

- Prefill: the arrivals' prompts in one left-padded forward of the model itself (through
  ``MultiLoraModel``, so adapters apply), then each row's K/V copied into a free slot.
- A finished row's slot is refilled by the last row (one copy of its K/V), so live rows
  stay in slots 0..n-1.
- The cache grows its columns by powers of two (graphs are re-captured over the new
  buffers), so a replica serving short chats holds little; it never grows past its
  memory budget: every slot gets the longest request's columns, so ``slots x columns``
  is bounded, and the engine's context window is cut to what fits (a longer request is a
  400 before any work, not an out-of-memory error that takes every stream down).
- LoRA: a step with any adapter row runs eagerly (the gathered LoRA matmuls change shape
  as adapters come and go); base-only steps replay graphs.
"""

from __future__ import annotations

from typing import Any

from serve.models.batch_loop import BatchLoop, Request
from serve.models.cuda_graphs import GraphedStep, bucket
from serve.models.slot_decoder import SlotCache, SlotDecoder, column_bytes

FIRST_COLUMNS = 256
MIN_CONTEXT = 256  # a budget that leaves less per request is a configuration error


class SlotBatcher(BatchLoop):
    thread_name = "slot-batcher"

    @property
    def kv_capacity_tokens(self) -> int | None:
        """Every slot's columns: what the cache holds room for now."""
        return self.cache.slots * self.cache.columns

    def __init__(
        self,
        model: Any,
        *,
        max_len: int,
        kv_bytes: int | None = None,
        graphs: bool | None = None,
        **loop: Any,
    ) -> None:
        """``max_len``: the most tokens (prompt and output) a request may hold, cut to
        what ``kv_bytes`` of KV cache allows for ``max_batch`` slots (``max_len`` then
        says what was kept); ``graphs``: capture CUDA graphs (default: on CUDA);
        ``loop``: ``BatchLoop``'s settings."""
        super().__init__(model, **loop)
        max_batch = self.max_batch
        device = self.model.device
        if kv_bytes is not None:
            fits = kv_bytes // column_bytes(model.config, max_batch, model.dtype)
            if fits < MIN_CONTEXT:
                raise ValueError(
                    f"{kv_bytes / 2**20:.0f} MiB of KV cache hold {fits} tokens for each of "
                    f"{max_batch} rows; lower max_batch or raise the memory share"
                )
            max_len = min(max_len, fits)
        self.max_len = max_len
        columns = min(FIRST_COLUMNS, max_len)
        self.cache = SlotCache(model.config, max_batch, columns, max_len, model.dtype, device)
        self.decoder = SlotDecoder(model, self.cache)
        use_graphs = device.type == "cuda" if graphs is None else graphs
        self.graphs = GraphedStep(self.decoder.step, max_batch, device, use_graphs)

    def _prefill(self, arrivals: list[Request]) -> None:
        logits, cache, mask = self._prefill_forward(arrivals)
        self._fit(max(r.length for r in arrivals) + 1)
        width = mask.shape[1]
        for i, row in enumerate(arrivals):
            start = width - row.length  # left padding before it
            self.cache.write(
                len(self._rows),
                [layer.keys[i, :, start:] for layer in cache.layers],
                [layer.values[i, :, start:] for layer in cache.layers],
            )
            self._rows.append(row)
        self._advance(arrivals, self._sample(logits, arrivals))

    def _step(self) -> None:
        rows = self._rows
        length = max(r.length for r in rows) + 1
        self._fit(length)
        tokens = [r.generated[-1] for r in rows]
        positions = [r.length for r in rows]
        adapters = [r.adapter for r in rows]
        if any(adapters):
            with self.model.routing(adapters):
                logits = self.graphs.eager(tokens, positions, length)
        else:
            logits = self.graphs.run(tokens, positions, length, self.cache.columns)
        for r in rows:
            r.length += 1
        self._advance(rows, self._sample(logits, rows))

    def _fit(self, length: int) -> None:
        """Columns for ``length`` tokens in every slot (graphs over the old buffers go)."""
        if length > self.cache.columns:
            self.cache.grow(bucket(length, self.cache.capacity, self.cache.columns))
            self.graphs.reset()

    def _cut(self, keep: list[int]) -> list[Request]:
        """Move the kept rows beyond the first ``len(keep)`` slots into the freed ones."""
        rows, live = self._rows, len(keep)
        kept = set(keep)
        holes = [slot for slot in range(live) if slot not in kept]
        movers = [slot for slot in keep if slot >= live]
        order = {slot: slot for slot in keep if slot < live}
        for hole, source in zip(holes, movers, strict=True):
            self.cache.move(source, hole, rows[source].length)
            order[hole] = source
        return [rows[order[slot]] for slot in range(live)]
