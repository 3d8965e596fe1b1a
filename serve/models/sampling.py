"""Per-request sampling for transformers' continuous batching: top_p and seed.

Top-p: transformers' per-request top-p sorts every row of every step, also the rows that
asked for no top-p (most requests); ``SparseTopP`` sorts only the rows that need it (the
built-in cost ~12% of the batching loop on the tiny model).

Seed: one batch samples every request with one shared generator, so a seed cannot be
honoured by seeding it. Instead a seeded request's row is decided in
``SeededSampling``, the last processor: Gumbel-max over the processed logits with noise
drawn from a generator seeded by (seed, position). The row leaves with a single finite
logit, so the batch's own sampling can only pick that token. Unseeded rows are untouched.
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


class SparseTopP(ContinuousBatchingTopPLogitsWarper):
    def __init__(self) -> None:
        super().__init__(TopPLogitsWarper(top_p=1.0))

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        top_p = tensor_arg[: scores.size(0)].view(dtype=torch.float32)
        rows = (top_p < 1.0).nonzero().flatten()
        if rows.numel() == 0:
            return scores
        scores = scores.clone()
        scores[rows] = super().__call__(scores[rows], tensor_arg[rows])
        return scores


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
        rows = (seeds != NO_SEED).nonzero().flatten().tolist()
        if not rows:
            return scores
        scores = scores.clone()
        for row in rows:
            generator = torch.Generator(device="cpu").manual_seed(int(seeds[row]))
            uniform = torch.rand(scores.size(1), generator=generator).clamp_(1e-10, 1.0)
            gumbel = -torch.log(-torch.log(uniform)).to(scores.device)
            choice = int(torch.argmax(torch.log_softmax(scores[row], dim=-1) + gumbel))
            scores[row].fill_(float("-inf"))
            scores[row, choice] = 0.0
        return scores


def add_request_sampling(manager: Any) -> None:
    """Append ``SparseTopP`` and ``SeededSampling`` to a continuous-batching manager's
    processors (before it starts: the batch's argument tensors are sized from the
    processor count). Its generation config must not create a top-p processor itself."""
    processors = manager.logit_processor
    processors.logits_processor.extend([SparseTopP(), SeededSampling()])
    processors.tensors_required += 2
    processors._retrieve_processors_kwargs()
    processors.do_processing = True
