"""One decode step for a whole batch over per-slot KV buffers, with fixed shapes.

Why not the model's own forward: transformers' forward over a growing ``DynamicCache``
re-allocates every layer's cache at every step, builds its attention mask and output
objects in Python, and changes shape each step, so it can neither be captured as a CUDA
graph nor be cheap in Python. Eager decoding is launch-bound on a GPU (STACK-NOTES: 13
tokens/s at batch 1 for a 1B model on an H100), and ``torch.compile``'s CUDA graphs
refused transformers' static cache there. This step is written against the model's own
modules (norms, projections, MLP, rotary embedding, so weights, RoPE scaling and LoRA
wrappers are the model's), with the cache in buffers of fixed size:

- ``SlotCache``: per layer, K and V of ``[slots, kv_heads, max_len, head_dim]``; a
  request owns a slot and its tokens sit at their positions, so no padding is needed.
- ``SlotDecoder.step``: rows ``0..B-1`` of the batch are slots ``0..B-1``; each row
  writes its new K/V at its own position and attends to the first ``length`` columns
  under a mask of its own length. Shapes depend only on ``(B, length)``, so each pair
  can be captured once as a CUDA graph (``serve.models.cuda_graphs``) and replayed.

Llama-family attention only (Llama, Mistral, Qwen2, Qwen3: GQA, optional q/k norms,
biases), without sliding windows or dynamic RoPE; ``unsupported_reason`` says why not
for any other model, and the engine then uses the padded batch.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import torch
from torch.nn import functional

SUPPORTED_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def unsupported_reason(model: Any) -> str | None:
    """Why ``SlotDecoder`` cannot run ``model`` exactly as its own forward would; None if it can."""
    config = model.config
    if config.model_type not in SUPPORTED_TYPES:
        return f"model type {config.model_type!r} (supported: {sorted(SUPPORTED_TYPES)})"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    rope_type = str((rope or {}).get("rope_type", (rope or {}).get("type", "default")))
    if "dynamic" in rope_type or "longrope" in rope_type:
        return f"RoPE type {rope_type!r} changes with the sequence length"
    window = getattr(config, "sliding_window", None)
    windowed = window is not None and window < config.max_position_embeddings
    if windowed or "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "sliding-window attention"
    return None


def column_bytes(config: Any, slots: int, dtype: torch.dtype) -> int:
    """Bytes one more position costs a ``SlotCache``: every slot, layer, K and V."""
    head_dim = getattr(config, "head_dim", None) or (
        config.hidden_size // config.num_attention_heads
    )
    per_slot = config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim
    return slots * per_slot * torch.empty((), dtype=dtype).element_size()


class SlotCache:
    """Each layer's keys and values for ``slots`` sequences: ``columns`` positions now,
    grown on demand up to ``capacity`` (the longest sequence served)."""

    def __init__(
        self, config: Any, slots: int, columns: int, capacity: int, dtype: Any, device: Any
    ) -> None:
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        self._row_shape = (config.num_key_value_heads, head_dim)
        self._like = {"dtype": dtype, "device": device}
        self.slots, self.capacity, self.columns = slots, capacity, 0
        self.keys: list[torch.Tensor] = [self._empty(0)] * config.num_hidden_layers
        self.values: list[torch.Tensor] = list(self.keys)
        self.grow(columns)

    def _empty(self, columns: int) -> torch.Tensor:
        heads, head_dim = self._row_shape
        return torch.zeros(self.slots, heads, columns, head_dim, **self._like)

    def grow(self, columns: int) -> None:
        """Re-allocate with ``columns`` positions (at most ``capacity``), keeping the contents."""
        columns = min(columns, self.capacity)
        if columns <= self.columns:
            return
        for tensors in (self.keys, self.values):
            for i, old in enumerate(tensors):
                new = self._empty(columns)
                new[:, :, : old.shape[2]] = old
                tensors[i] = new
        self.columns = columns

    def write(self, slot: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """A prefilled sequence, per layer ``[kv_heads, length, head_dim]``, at 0..length-1."""
        for cache_k, cache_v, k, v in zip(self.keys, self.values, keys, values, strict=True):
            cache_k[slot, :, : k.shape[1]] = k
            cache_v[slot, :, : v.shape[1]] = v

    def move(self, source: int, target: int, length: int) -> None:
        """Copy a sequence to another slot (the batch keeps its live rows in slots 0..n-1)."""
        for cache in (*self.keys, *self.values):
            cache[target, :, :length] = cache[source, :, :length]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


class SlotDecoder:
    """``step(tokens, positions, length)`` -> the next-token logits of rows ``0..B-1``."""

    def __init__(self, model: Any, cache: SlotCache) -> None:
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"SlotDecoder does not support this model: {reason}")
        self.cache = cache
        self.model = model  # its lm_head is looked up each step: an adapter may wrap it
        self.body = model.model
        first = self.body.layers[0].self_attn
        self.head_dim = first.head_dim
        self.apply_rope = sys.modules[type(first).__module__].apply_rotary_pos_emb
        device = cache.keys[0].device
        self.rows = torch.arange(cache.slots, device=device)
        self.columns = torch.arange(cache.capacity, device=device)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, length: int) -> torch.Tensor:
        """One token per row: ``tokens`` and ``positions`` are ``[B]`` (B <= slots), and
        every position is below ``length``. Writes each row's K/V at its position."""
        x = self.body.embed_tokens(tokens)[:, None, :]
        cos, sin = self.body.rotary_emb(x, positions[:, None])
        at = _Step(
            rows=self.rows[: tokens.shape[0]],
            positions=positions,
            rope=(cos, sin),
            visible=(self.columns[:length] <= positions[:, None])[:, None, None, :],
            length=length,
        )
        for layer, keys, values in zip(
            self.body.layers, self.cache.keys, self.cache.values, strict=True
        ):
            x = x + self._attend(layer.self_attn, layer.input_layernorm(x), keys, values, at)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.model.lm_head(self.body.norm(x))[:, 0]

    def _attend(
        self, attn: Any, hidden: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, at: _Step
    ) -> torch.Tensor:
        batch, shape = hidden.shape[0], (hidden.shape[0], 1, -1, self.head_dim)
        q = attn.q_proj(hidden).view(shape)
        k = attn.k_proj(hidden).view(shape)
        v = attn.v_proj(hidden).view(shape)
        if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = self.apply_rope(q.transpose(1, 2), k.transpose(1, 2), *at.rope)
        keys[at.rows, :, at.positions] = k[:, :, 0]
        values[at.rows, :, at.positions] = v[:, 0]
        # Grouped-query attention without repeating K/V: the query heads that share a
        # K/V head (consecutive, as in the model's repeat_kv) become that head's queries.
        kv_heads = keys.shape[1]
        out = functional.scaled_dot_product_attention(
            q.reshape(batch, kv_heads, -1, self.head_dim),
            keys[:batch, :, : at.length],
            values[:batch, :, : at.length],
            attn_mask=at.visible,
            scale=attn.scaling,
        )
        return attn.o_proj(out.reshape(batch, 1, -1))


class _Step(NamedTuple):
    """What every layer of one step shares."""

    rows: torch.Tensor  # slot index of each row: 0..B-1
    positions: torch.Tensor  # [B]: where each row's new token goes
    rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin at those positions
    visible: torch.Tensor  # [B, 1, 1, length]: the columns each row attends to
    length: int
