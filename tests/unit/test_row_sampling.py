"""Batched per-row sampling: greedy rows, temperature, nucleus and seeds in one pass."""

from __future__ import annotations

import torch

from serve.models.engine import SamplingParams
from serve.models.row_sampling import sample_rows


def params(**kw) -> SamplingParams:
    return SamplingParams(**kw)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_greedy_rows_take_the_argmax_beside_sampled_ones():
    logits = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 1.0], [0.0, 0.0, 9.0]])
    tokens = sample_rows(
        logits,
        [params(temperature=0), params(temperature=1.0), params(temperature=0)],
        [None, seeded(1), None],
    )
    assert tokens[0] == 1 and tokens[2] == 2


def test_a_seeded_row_draws_the_same_whatever_else_is_in_the_batch():
    torch.manual_seed(0)
    row = torch.randn(1, 50)
    alone = [sample_rows(row, [params(temperature=1.0, seed=7)], [seeded(7)]) for _ in range(3)]
    crowd = torch.cat([torch.randn(3, 50), row, torch.randn(2, 50)])
    mixed = sample_rows(
        crowd,
        [params(temperature=0.5)] * 3 + [params(temperature=1.0, seed=7)] + [params()] * 2,
        [None] * 3 + [seeded(7)] + [None] * 2,
    )
    assert alone[0] == alone[1] == alone[2] and mixed[3] == alone[0][0]


def test_samples_follow_the_softmax_at_the_rows_temperature():
    """400 rows of the same logits: the token counts match softmax(logits / T) (a loose
    chi-square bound; a sampler ignoring the temperature or the noise fails it)."""
    torch.manual_seed(1)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(400, 1)
    for temperature in (0.5, 2.0):
        tokens = sample_rows(logits, [params(temperature=temperature)] * 400, [None] * 400)
        expected = (logits[0] / temperature).softmax(-1) * 400
        counts = torch.bincount(torch.tensor(tokens), minlength=4).float()
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 16.3, (temperature, counts, expected)  # p = 0.001 at 3 dof


def test_top_p_keeps_only_the_nucleus_and_at_least_one_token():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(300, 1)
    nucleus = sample_rows(logits, [params(temperature=1.0, top_p=0.7)] * 300, [None] * 300)
    assert set(nucleus) == {0, 1}  # 0.5 + 0.3 reaches 0.7: the rest is cut
    tightest = sample_rows(logits[:50], [params(temperature=1.0, top_p=1e-6)] * 50, [None] * 50)
    assert set(tightest) == {0}


def test_a_zero_noise_draw_cannot_pick_a_filtered_token(monkeypatch):
    """Exp(1) draws of exactly 0 (a uniform draw of 0) would give 0/0 = NaN for tokens
    the nucleus removed, and argmax picks NaN."""
    original = torch.Tensor.exponential_

    def zeros(self, *args, **kwargs):
        original(self, *args, **kwargs)
        return self.zero_()

    monkeypatch.setattr(torch.Tensor, "exponential_", zeros)
    logits = torch.log(torch.tensor([[0.05, 0.15, 0.8]]))
    assert sample_rows(logits, [params(temperature=1.0, top_p=0.5)], [None]) == [2]


def test_a_row_without_top_p_keeps_its_tail_beside_rows_with_one():
    """Its float32 cumulative mass reaches 1.0 before the tail: a nucleus filter run for
    its neighbours' sake must still leave all of it (or a seeded answer would change
    with the batch)."""
    vocab = 50_000
    logits = torch.full((2, vocab), -30.0)
    logits[:, 0] = 10.0  # nearly all the mass; the tail underflows the running sum
    logits[:, 1:] += torch.linspace(0, 1, vocab - 1)
    noise = torch.ones(2, vocab)
    noise[1, -1] = torch.finfo(torch.float32).tiny  # the race is rigged for the last token

    original = torch.Tensor.exponential_

    def rigged(self, *args, **kwargs):
        original(self, *args, **kwargs)
        return self.copy_(noise[: self.shape[0]] if self.dim() == 2 else noise[1])

    import unittest.mock

    with unittest.mock.patch.object(torch.Tensor, "exponential_", rigged):
        tokens = sample_rows(
            logits, [params(temperature=1.0, top_p=0.5), params(temperature=1.0)], [None, None]
        )
    assert tokens == [0, vocab - 1]  # row 1 could still draw its last token
