"""A batch over one left-padded ``DynamicCache``: any model transformers can run.

transformers' continuous batching re-packs its batch every step: on this 2-core CPU that
bookkeeping (~1.9 ms) costs more than the tiny model's whole forward, and it capped the
gain at concurrency 8 at 2.4-2.9 times one-at-a-time ``generate``. A padded batch over one
``DynamicCache`` costs one forward per decode step for every stream (tiny model: 3.0 ms
for 8 streams vs 3.1 ms for one): 4.5-4.8 times at 8, about 9 at 32 (bench/README.md).
The price: prefills run between decode steps, not inside them, so time to first token
under load is higher than with continuous batching. ``SlotBatcher`` is faster still for
the Llama family; this batch runs every other model.

Requests that arrived since the last step are prefilled together (left-padded to the
longest) and spliced in, left-padded to the batch's length (or padding the batch to
theirs); finished and cancelled rows are cut out, and columns that are padding for every
row trimmed.
"""

from __future__ import annotations

from typing import Any

import torch

from serve.models.batch_loop import BatchLoop, Request


class PaddedBatcher(BatchLoop):
    thread_name = "padded-batcher"

    def __init__(self, model: Any, **loop: Any) -> None:
        """``loop``: ``BatchLoop``'s settings."""
        super().__init__(model, **loop)
        self._cache: Any = None
        self._mask: torch.Tensor | None = None

    def _prefill(self, arrivals: list[Request]) -> None:
        logits, cache, mask = self._prefill_forward(arrivals)
        self._splice(cache, mask)
        self._rows.extend(arrivals)
        self._advance(arrivals, self._sample(logits, arrivals))

    def _splice(self, cache: Any, mask: torch.Tensor) -> None:
        """Add the new rows' cache to the batch, left-padding whichever side is shorter."""
        if self._cache is None or not self._rows:
            self._cache, self._mask = cache, mask
            return
        assert self._mask is not None
        width, length = self._mask.shape[1], mask.shape[1]
        pad_new, pad_batch = max(width - length, 0), max(length - width, 0)
        for batch_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            batch_layer.keys = torch.cat(
                [_left_pad(batch_layer.keys, pad_batch), _left_pad(new_layer.keys, pad_new)]
            )
            batch_layer.values = torch.cat(
                [_left_pad(batch_layer.values, pad_batch), _left_pad(new_layer.values, pad_new)]
            )
        self._mask = torch.cat(
            [
                torch.nn.functional.pad(self._mask, (pad_batch, 0)),
                torch.nn.functional.pad(mask, (pad_new, 0)),
            ]
        )

    def _step(self) -> None:
        assert self._mask is not None
        rows = self._rows
        device = self.model.device
        ids = torch.tensor([[r.generated[-1]] for r in rows], device=device)
        positions = torch.tensor([[r.length] for r in rows], device=device)
        self._mask = torch.nn.functional.pad(self._mask, (0, 1), value=1)
        logits = self.model(
            [r.adapter for r in rows],
            input_ids=ids,
            attention_mask=self._mask,
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
        ).logits
        for r in rows:
            r.length += 1
        self._advance(rows, self._sample(logits[:, -1, :], rows))

    def _cut(self, keep: list[int]) -> list[Request]:
        """Keep those rows, then trim columns no remaining row uses."""
        if not keep:
            self._cache = self._mask = None
            return []
        index = torch.tensor(keep, device=self.model.device)
        assert self._mask is not None
        self._mask = self._mask[index]
        first = int(self._mask.any(dim=0).long().argmax())
        self._mask = self._mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, first:, :]
            layer.values = layer.values[index, :, first:, :]
        return [self._rows[i] for i in keep]


def _left_pad(t: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-pad a [batch, heads, seq, dim] cache tensor on the left of ``seq``."""
    return torch.nn.functional.pad(t, (0, 0, n, 0)) if n else t
