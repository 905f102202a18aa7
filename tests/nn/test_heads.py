"""Probe heads: W = A B has rank r, logits start O(1), the NLL is the softmax cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmsat.errors import UserError
from lmsat.nn.heads import FullRankHead, LowRankHead, init_sigma, make_head


def _features(n: int, d: int, rms: float, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * rms


def test_low_rank_logits_are_h_times_ab_transposed():
    head = LowRankHead(300, 24, 5, generator=torch.Generator().manual_seed(1))
    h = _features(40, 24, 1.0)
    expected = h.double() @ (head.A.detach().double() @ head.B.detach().double()).T
    assert torch.allclose(head(h).double(), expected, atol=1e-5)
    assert torch.allclose(head.weight().double(), head.A.detach().double() @ head.B.detach().double(), atol=1e-6)


@pytest.mark.parametrize("rank", [1, 3, 11, 24])
def test_low_rank_head_has_rank_exactly_r(rank):
    head = LowRankHead(200, 24, rank, generator=torch.Generator().manual_seed(rank))
    s = torch.linalg.svdvals(head.weight().detach().double())
    assert float(s[rank - 1] / s[0]) > 1e-3  # r directions carry weight ...
    if rank < len(s):
        assert float(s[rank] / s[0]) < 1e-5  # ... and the rest is float32 rounding
    assert head.rank == rank
    assert head.n_parameters() == rank * (200 + 24)


@pytest.mark.parametrize("rank,rms", [(2, 0.5), (16, 3.0), (64, 1.8)])
def test_initial_logits_have_unit_standard_deviation(rank, rms):
    head = LowRankHead(4000, 64, rank, feature_rms=rms, generator=torch.Generator().manual_seed(rank))
    h = _features(512, 64, rms, seed=2)
    with torch.no_grad():
        std = float(head(h).std())
    assert std == pytest.approx(1.0, rel=0.12)
    # both factors get the same entry scale (documented choice)
    assert float(head.A.detach().std()) == pytest.approx(init_sigma(rank, 64, rms), rel=0.05)
    assert float(head.B.detach().std()) == pytest.approx(init_sigma(rank, 64, rms), rel=0.1)


def test_full_rank_head_starts_with_unit_logits_and_has_rank_min_v_d():
    head = FullRankHead(3000, 48, feature_rms=2.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(head(_features(512, 48, 2.5)).std()) == pytest.approx(1.0, rel=0.1)
    assert head.rank == 48
    assert FullRankHead(20, 48).rank == 20


def test_nll_and_top1_match_an_independent_log_softmax():
    head = make_head("low-rank", 50, 8, rank=3, feature_rms=1.0, seed=4)
    h = _features(30, 8, 3.0, seed=5)
    y = torch.randint(0, 50, (30,), generator=torch.Generator().manual_seed(6))
    loss, correct = head.nll(h, y)
    z = (h.double().numpy() @ head.weight().detach().double().numpy().T)
    logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    assert float(loss.detach()) == pytest.approx(-logp[np.arange(30), y.numpy()].sum(), rel=1e-5)
    assert int(correct) == int((z.argmax(1) == y.numpy()).sum())


@pytest.mark.parametrize("rank", [0, -1, 9, 2.5])
def test_rank_outside_one_to_min_v_d_is_a_user_error(rank):
    with pytest.raises(UserError, match=r"outside \[1, 8\]"):
        LowRankHead(100, 8, rank)


def test_same_seed_gives_the_same_head_and_another_seed_does_not():
    a, b, c = (make_head("low-rank", 40, 6, rank=2, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.A, b.A) and torch.equal(a.B, b.B)
    assert not torch.equal(a.A, c.A)
