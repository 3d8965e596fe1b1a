"""Run a fixed-shape decode step as replayed CUDA graphs; plainly anywhere else.

A decode step of a 1B model in eager PyTorch is hundreds of kernel launches, each a few
microseconds of Python and driver time, for a few microseconds of GPU work: launch-bound
(STACK-NOTES: 77 ms a token at batch 1 through ``generate`` on an H100). A CUDA graph
replays the whole step's kernels with one launch. A graph fixes its shapes and its
tensors' addresses, so inputs go through static buffers, and one graph is captured per
(rows, columns) bucket, powers of two, on first use: at most
``log2(slots) * log2(max_len)`` graphs, sharing one memory pool. The rows a bucket adds
beyond the live ones are free slots: they compute garbage that nothing reads.

If a capture fails (an operation that cannot be captured, an old driver), the step runs
eagerly from then on and the engine still answers; ``self.disabled`` says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)
Step = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
MIN_COLUMNS = 64


def bucket(n: int, cap: int, floor: int = 1) -> int:
    """The power of two at or above ``n`` (at least ``floor``), but not above ``cap``."""
    size = floor
    while size < n:
        size *= 2
    return min(size, cap)


class GraphedStep:
    """``run(tokens, positions, length)`` -> logits of the ``len(tokens)`` live rows."""

    def __init__(self, step: Step, slots: int, device: torch.device, graphs: bool) -> None:
        self.step = step
        self.slots = slots
        self.device = device
        self.disabled: str | None = None
        if not graphs:
            self.disabled = "not on CUDA" if device.type != "cuda" else "turned off"
        self.tokens = torch.zeros(slots, dtype=torch.long, device=device)
        self.positions = torch.zeros(slots, dtype=torch.long, device=device)
        self._staged = torch.zeros(2, slots, dtype=torch.long)  # pinned: async host-to-device
        if graphs and torch.cuda.is_available():
            self._staged = self._staged.pin_memory()
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool: tuple[int, int] | None = None

    @property
    def captured(self) -> int:
        return len(self._graphs)

    def run(
        self, tokens: list[int], positions: list[int], length: int, columns: int
    ) -> torch.Tensor:
        """``length``: columns the live rows need (every position is below it);
        ``columns``: the cache's, which a bucket must not exceed."""
        live = len(tokens)
        if self.disabled:
            return self.eager(tokens, positions, length)
        rows = bucket(live, self.slots)
        width = bucket(length, columns, MIN_COLUMNS)
        self._staged[:, :live] = torch.tensor([tokens, positions])  # read by the last
        # step's copy, which its logits' read (a sync) has waited for
        self.tokens[:live].copy_(self._staged[0, :live], non_blocking=True)
        self.positions[:live].copy_(self._staged[1, :live], non_blocking=True)
        self.tokens[live:rows] = 0
        self.positions[live:rows] = 0
        graph = self._graphs.get((rows, width))
        if graph is None:
            try:
                graph = self._capture(rows, width)
            except Exception as exc:  # whatever it was: run eagerly instead
                self.disabled = f"{type(exc).__name__}: {exc}"
                log.warning("CUDA graph capture failed, decoding eagerly: %s", self.disabled)
                return self.step(self.tokens[:live], self.positions[:live], length)
        graph[0].replay()
        return graph[1][:live]

    def eager(self, tokens: list[int], positions: list[int], length: int) -> torch.Tensor:
        """The step run plainly, over exactly the live rows and columns."""
        device = self.device
        return self.step(
            torch.tensor(tokens, device=device), torch.tensor(positions, device=device), length
        )

    def reset(self) -> None:
        """Forget every graph (the tensors they were captured over were replaced) and
        their pool: a pool whose graphs are gone can only be reused once every block in
        it is free, and the capture stream's cuBLAS workspace may still hold one."""
        self._graphs.clear()
        self._pool = None

    def _capture(self, rows: int, columns: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        tokens, positions = self.tokens[:rows], self.positions[:rows]
        caller = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(caller)
        try:
            # Warm up on the stream the capture uses: lazy inits (cuBLAS handles and
            # workspaces, which are per stream) happen here, outside the graph.
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.step(tokens, positions, columns)
            graph = torch.cuda.CUDAGraph()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self._pool, stream=side):
                out = self.step(tokens, positions, columns)
        finally:
            torch.cuda.set_stream(caller)  # also when the capture failed to begin
            caller.wait_stream(side)
        self._graphs[(rows, columns)] = (graph, out)
        return graph, out
