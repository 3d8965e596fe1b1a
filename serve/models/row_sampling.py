"""The next token of every row of a batch, each with its own temperature, top_p and seed,
in a few batched tensor operations and one read of the result.

Sampling a row at a time (softmax, multinomial, ``int()``) costs a handful of kernel
launches and a device sync per sampled row: on a GPU, 128 sampled streams would pay 128
syncs a step. Here the sampled rows are scaled, nucleus-filtered and sampled together
with the exponential race (``argmax(p / E)``, ``E ~ Exp(1)``, picks token i with
probability p_i: the Gumbel-max trick), and the whole batch's tokens are read once. A
seeded row draws its noise from its own generator, so its tokens do not depend on what
else is in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from serve.models.engine import SamplingParams

GREEDY_BELOW = 1e-4  # temperatures under this are argmax


def sample_rows(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """``logits`` ``[rows, vocab]``; row i sampled by ``params[i]`` with ``generators[i]``
    (None: the global generator)."""
    tokens = logits.argmax(dim=-1)
    sampled = [i for i, p in enumerate(params) if p.temperature >= GREEDY_BELOW]
    if sampled:
        device = logits.device
        rows = torch.tensor(sampled, device=device)
        temperature = torch.tensor([params[i].temperature for i in sampled], device=device)
        scores = logits.index_select(0, rows).float() / temperature[:, None]
        top_p = [params[i].top_p for i in sampled]
        if min(top_p) < 1.0:
            scores = _nucleus(scores, torch.tensor(top_p, device=device))
        noise = torch.empty_like(scores).exponential_()
        for j, i in enumerate(sampled):
            if generators[i] is not None:
                noise[j].exponential_(generator=generators[i])
        # A draw of exactly 0 would make 0/0 a NaN, which argmax picks: a filtered token.
        noise.clamp_(min=torch.finfo(noise.dtype).tiny)
        picks = (scores.softmax(-1) / noise).argmax(dim=-1)
        tokens = tokens.index_copy(0, rows, picks)
    return tokens.tolist()


def _nucleus(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep each row's most likely tokens up to ``top_p`` of its mass (at least one)."""
    ordered, order = scores.sort(dim=-1, descending=True)
    probs = ordered.softmax(-1)
    # A row without top_p keeps everything: in float32 its cumulative sum reaches 1.0
    # before the vocabulary's tail, which would otherwise be cut because of its neighbours.
    beyond = (probs.cumsum(-1) - probs >= top_p[:, None]) & (top_p < 1.0)[:, None]
    ordered = ordered.masked_fill(beyond, float("-inf"))
    return torch.empty_like(scores).scatter_(-1, order, ordered)
