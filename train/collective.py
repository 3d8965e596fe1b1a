"""The workers of one data-parallel run, as the training loop needs them: which share of
each step's rows is this worker's, one sum of every worker's gradients and counts a
step, and the lead worker's word (go on, cancel, pause) for all of them.

Ray Train sets up ``torch.distributed`` (gloo on CPUs, NCCL on GPUs) before the worker
function runs; a run outside Ray Train, or a lone worker, is the one-worker case, where
every call is free. The gradients are summed by hand (one flat all-reduce a step), not by
``DistributedDataParallel``: only the LoRA weights train, a few MB, and the sum of
per-token losses divided by the whole step's labelled tokens then gives exactly the
gradient one worker would compute over the whole step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

from forge.finetune.runs import Directive

T = TypeVar("T")
DIRECTIVES: tuple[Directive, ...] = (None, "cancel", "pause")


class Collective:
    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank = rank
        self.world = world

    @classmethod
    def current(cls) -> Collective:
        """This process's place in the run's process group (none: a lone worker)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def alone(self) -> bool:
        return self.world == 1

    @property
    def lead(self) -> bool:
        """The worker that reports, checkpoints and saves (the others compute)."""
        return self.rank == 0

    def share(self, rows: Sequence[T]) -> list[T]:
        """This worker's rows of a step: every ``world``-th, from its rank."""
        return list(rows[self.rank :: self.world])

    def sum_(self, tensor: torch.Tensor) -> None:
        """Sum ``tensor`` over the workers, in place."""
        if not self.alone:
            import torch.distributed as dist

            dist.all_reduce(tensor)

    def agree(self, directive: Directive) -> Directive:
        """The lead worker's directive, for every worker (all stop at the same step)."""
        if self.alone:
            return directive
        import torch.distributed as dist

        code = torch.tensor([DIRECTIVES.index(directive) if self.lead else 0])
        dist.broadcast(code, src=0)
        return DIRECTIVES[int(code.item())]
