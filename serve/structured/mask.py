"""The grammar mask on a batch's logits: each constrained row's allowed tokens, as
llguidance's int32 bitmask (one bit a token) filled in a preallocated buffer, unpacked
to a boolean mask and applied as ``-inf`` on those rows only; other rows are untouched.

Not ``llguidance.torch.apply_token_bitmask_inplace``: it is ``torch.compile``d, which
needs a C++ compiler at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from llguidance import LLMatcher


class GrammarMask:
    def __init__(self, max_rows: int, vocab: int) -> None:
        """``vocab``: the logits' width."""
        self.vocab = vocab
        self.words = (vocab + 31) // 32
        self.bits = torch.zeros((max_rows, self.words), dtype=torch.int32)
        # Bit b of a word; bit 31 is the int32 sign bit, and ``&`` works on it all the same.
        self._bit = torch.tensor([1 << b for b in range(31)] + [-(1 << 31)], dtype=torch.int32)

    def fill(self, matchers: Sequence[LLMatcher]) -> torch.Tensor:
        """Each matcher's allowed tokens: a bool ``[len(matchers), vocab]`` (on the CPU)."""
        n = len(matchers)
        if n > self.bits.shape[0]:
            self.bits = torch.zeros((n, self.words), dtype=torch.int32)
        for i, matcher in enumerate(matchers):
            row = self.bits[i]
            matcher.unsafe_compute_mask_ptr(row.data_ptr(), self.words * 4)
        bits = self.bits[:n]
        return (bits.unsqueeze(-1) & self._bit).ne(0).view(n, -1)[:, : self.vocab]

    def apply(
        self, logits: torch.Tensor, rows: Sequence[int], matchers: Sequence[LLMatcher]
    ) -> None:
        """Set what ``matchers[j]`` forbids to ``-inf`` in ``logits[rows[j]]``, in place."""
        if not rows:
            return
        forbidden = self.fill(matchers).logical_not_().to(logits.device, non_blocking=True)
        if list(rows) == list(range(logits.shape[0])):  # every row: no gather
            logits.masked_fill_(forbidden, float("-inf"))
            return
        index = torch.tensor(list(rows), device=logits.device)
        picked = logits.index_select(0, index).masked_fill_(forbidden, float("-inf"))
        logits.index_copy_(0, index, picked)


def consume(
    matcher: LLMatcher, token: int, eos_ids: set[int] | frozenset[int]
) -> tuple[bool, str | None]:
    """Advance ``matcher`` by the row's sampled ``token``: (whether the output is
    complete, an error). An end-of-turn token was only allowed once the output could end;
    a matcher that is stopped takes nothing but one, so the row ends there (a forward
    saved)."""
    if token in eos_ids:
        return True, None
    if not matcher.consume_token(token):
        return False, f"the grammar rejected token {token}: {matcher.get_error()}"
    return matcher.is_stopped(), None
