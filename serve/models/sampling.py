"""Per-request sampling for transformers' continuous batching: top_p and seed.

Top-p: transformers' per-request top-p sorts every row of every step, also the rows that
asked for no top-p (most requests); ``SparseTopP`` sorts only the rows that need it (the
built-in cost ~12% of the batching loop on the tiny model).

Seed: one batch samples every request with one shared generator, so a seed cannot be
honoured by seeding it. Instead a seeded request's row is decided in
``SeededSampling``, the last processor: Gumbel-max over the processed logits with noise
drawn from a generator seeded by (seed, position). The row leaves with a single finite
logit, so the batch's own sampling can only pick that token. Unseeded rows are untouched.
The noise is a hash of (seed, position, token id) computed on the device, not a CPU
generator's draw: the same on every device and in every batch.

CUDA graphs: transformers can capture the batch's step, processors included, and a
capture may not sync with the host (``nonzero``, ``tolist``: the H200 run failed there).
While a capture is under way both processors take a dense path, every row in a few
tensor operations, which gives each row the same result as the sparse one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingTopPLogitsWarper,
)
from transformers.generation.logits_process import TopPLogitsWarper

NO_SEED = -1
_MIX = 1_000_003  # (seed, position) → one int32 generator seed per sampled token


def capturing(tensor: torch.Tensor) -> bool:
    """Whether a CUDA graph capture is recording on ``tensor``'s device now."""
    return tensor.is_cuda and torch.cuda.is_current_stream_capturing()


class SparseTopP(ContinuousBatchingTopPLogitsWarper):
    def __init__(self) -> None:
        super().__init__(TopPLogitsWarper(top_p=1.0))

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        if capturing(scores):
            return self.dense(scores, tensor_arg)
        top_p = tensor_arg[: scores.size(0)].view(dtype=torch.float32)
        rows = (top_p < 1.0).nonzero().flatten()
        if rows.numel() == 0:
            return scores
        scores = scores.clone()
        scores[rows] = super().__call__(scores[rows], tensor_arg[rows])
        return scores

    def dense(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        """Every row (a row with top_p 1.0 keeps all its tokens): no host sync."""
        return super().__call__(scores, tensor_arg[: scores.size(0)])


class SeededSampling(ContinuousBatchingLogitsProcessor):
    supported_kwargs: ClassVar[dict[str, type]] = {"seed": int}
    ignored_kwargs: ClassVar[tuple[str, ...]] = ()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(NO_SEED)

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        data = []
        for request in requests_with_new_token:
            seed = request.state.logit_processor_kwargs.get("seed")
            position = len(request.state.generated_tokens)
            data.append(NO_SEED if seed is None else (seed * _MIX + position) & 0x7FFFFFFF)
        return torch.tensor(data, dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        seeds = tensor_arg[: scores.size(0)]
        if capturing(scores):
            return self.dense(scores, seeds)
        rows = (seeds != NO_SEED).nonzero().flatten()
        if rows.numel() == 0:
            return scores
        scores = scores.clone()
        scores[rows] = _decided(scores[rows], seeds[rows])
        return scores

    def dense(self, scores: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Every row decided, the unseeded ones put back: no host sync."""
        seeded = (seeds[: scores.size(0)] != NO_SEED)[:, None]
        return torch.where(seeded, _decided(scores, seeds[: scores.size(0)]), scores)


def _decided(scores: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Each row reduced to one finite logit (0.0): its Gumbel-max pick with noise hashed
    from the row's seed and each token id."""
    noise = _hashed_uniform(seeds, scores.size(1))
    gumbel = -torch.log(-torch.log(noise))
    choice = (torch.log_softmax(scores.float(), dim=-1) + gumbel).argmax(dim=-1, keepdim=True)
    decided = torch.full_like(scores, float("-inf"))
    return decided.scatter_(1, choice, 0.0)


def _hashed_uniform(seeds: torch.Tensor, vocab: int) -> torch.Tensor:
    """Uniform (0, 1) noise ``[rows, vocab]`` from a 32-bit integer hash (lowbias32) of
    (seed, token id), in int64 without overflow: every product stays under 2**63."""
    mask = 0xFFFFFFFF
    tokens = torch.arange(vocab, device=seeds.device, dtype=torch.int64)
    x = (seeds.to(torch.int64)[:, None] * 0x9E3779B1 + tokens[None, :]) & mask
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & mask
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & mask
    x = x ^ (x >> 16)
    return ((x >> 8).to(torch.float32) + 0.5) / 2.0**24


def add_request_sampling(manager: Any) -> None:
    """Append ``SparseTopP`` and ``SeededSampling`` to a continuous-batching manager's
    processors (before it starts: the batch's argument tensors are sized from the
    processor count). Its generation config must not create a top-p processor itself."""
    processors = manager.logit_processor
    processors.logits_processor.extend([SparseTopP(), SeededSampling()])
    processors.tensors_required += 2
    processors._retrieve_processors_kwargs()
    processors.do_processing = True
