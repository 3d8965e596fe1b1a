"""The continuous batch's processors: the dense path that a CUDA graph capture takes
must decide every row exactly as the sparse path does outside one."""

from __future__ import annotations

import torch

from serve.models.sampling import NO_SEED, SeededSampling, SparseTopP, _hashed_uniform


def _logits(rows: int = 6, vocab: int = 50) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(3))


def test_seeded_rows_are_decided_the_same_dense_or_sparse() -> None:
    scores = _logits()
    seeds = torch.tensor([NO_SEED, 7, NO_SEED, 123456, 7, NO_SEED], dtype=torch.int32)
    sparse = SeededSampling()(scores.clone(), seeds)
    dense = SeededSampling().dense(scores.clone(), seeds)
    assert torch.equal(sparse, dense)
    for row in (1, 3, 4):
        assert torch.isfinite(sparse[row]).sum() == 1  # one token left to pick
    for row in (0, 2, 5):
        assert torch.equal(sparse[row], scores[row])  # unseeded rows untouched
    assert torch.equal(sparse[1], sparse[4])  # the same seed, the same pick


def test_no_seed_leaves_the_batch_alone() -> None:
    scores = _logits()
    seeds = torch.full((6,), NO_SEED, dtype=torch.int32)
    assert SeededSampling()(scores, seeds) is scores


def test_the_seeded_pick_follows_the_distribution() -> None:
    """Gumbel-max over hashed noise: over many seeds, token frequencies match softmax."""
    probs = torch.tensor([0.6, 0.3, 0.1])
    scores = probs.log().repeat(4000, 1)
    seeds = torch.arange(4000, dtype=torch.int32)
    picks = SeededSampling()(scores, seeds).argmax(dim=-1)
    share = torch.bincount(picks, minlength=3).float() / 4000
    assert torch.allclose(share, probs, atol=0.03)


def test_hashed_noise_is_uniform_and_in_the_open_interval() -> None:
    noise = _hashed_uniform(torch.tensor([0, 1, 2**31 - 1], dtype=torch.int32), 100_000)
    assert float(noise.min()) > 0.0 and float(noise.max()) < 1.0
    assert abs(float(noise.mean()) - 0.5) < 0.01
    assert not torch.equal(noise[0], noise[1])


def test_top_p_dense_matches_sparse() -> None:
    scores = _logits()
    top_p = torch.tensor([1.0, 0.5, 1.0, 0.9, 0.2, 1.0], dtype=torch.float32)
    arg = top_p.view(torch.int32)
    sparse = SparseTopP()(scores.clone(), arg)
    dense = SparseTopP().dense(scores.clone(), arg)
    assert torch.equal(torch.isfinite(sparse), torch.isfinite(dense))
    assert torch.isinf(sparse[4]).sum() > 0  # a low top_p cuts the tail
    assert torch.isfinite(sparse[0]).all()  # top_p 1.0 keeps everything
