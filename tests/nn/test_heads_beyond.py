"""Heads beyond a linear softmax and the SVD initialisation, against direct numpy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmsat.errors import UserError
from lmsat.nn.beyond import HeadSpec, MixtureOfSoftmaxes, build_head, svd_factors
from lmsat.nn.heads import FullRankHead
from lmsat.synth.generator import LanguageSpec, make_language, row_entropies


def _own_head(V: int, d: int, seed: int = 0, bias: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((V, d)) / math.sqrt(d), (rng.standard_normal(V) * 0.3 if bias else None)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _probs(head: torch.nn.Module, h: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(head.double()(torch.from_numpy(h)), dim=-1).numpy()


@pytest.mark.parametrize("bias", [True, False])
def test_svd_init_at_full_rank_reproduces_the_own_head_logits(bias):
    V, d = 300, 24
    W, b = _own_head(V, d, bias=bias)
    head = build_head(HeadSpec(), V, d, d, factors=svd_factors(W), bias=None if b is None else torch.from_numpy(b).float())
    h = np.random.default_rng(1).standard_normal((50, d))
    with torch.no_grad():
        logits = head(torch.from_numpy(h).float()).double().numpy()
    expected = h @ W.T + (0 if b is None else b)
    np.testing.assert_allclose(logits, expected, atol=2e-5)  # float32 factors of a float64 SVD


@pytest.mark.parametrize("rank", [1, 5, 12])
def test_svd_truncation_logits_equal_an_independent_numpy_svd(rank):
    V, d = 200, 16
    W, b = _own_head(V, d, seed=rank)
    u, s, vt = np.linalg.svd(W, full_matrices=False)
    w_r = (u[:, :rank] * s[:rank]) @ vt[:rank]
    head = build_head(HeadSpec(), V, d, rank, factors=svd_factors(W), bias=torch.from_numpy(b).float())
    h = np.random.default_rng(2).standard_normal((40, d))
    with torch.no_grad():
        logits = head(torch.from_numpy(h).float()).double().numpy()
    np.testing.assert_allclose(logits, h @ w_r.T + b, atol=2e-5)
    # and the factors are the symmetric split A = U_r S_r^1/2, B = S_r^1/2 V_r^T (up to the sign of each pair)
    a = head.A.detach().double().numpy()
    np.testing.assert_allclose(np.abs(a), np.abs(u[:, :rank] * np.sqrt(s[:rank])), atol=1e-5)


def _numpy_head(spec: str, head: torch.nn.Module, h: np.ndarray) -> np.ndarray:
    """The head's next-token distribution written out from its parameters in numpy (float64)."""
    P = {k: v.detach().double().numpy() for k, v in head.named_parameters()}
    prefix = "" if spec == "softmax" else "out."

    def out(x: np.ndarray) -> np.ndarray:
        z = x @ P[prefix + "B"].T @ P[prefix + "A"].T
        return z + P[prefix + "bias"] if prefix + "bias" in P else z

    if spec == "softmax":
        return _softmax(out(h))
    if spec == "sigsoftmax":
        z = out(h)
        unnorm = np.exp(z - z.max(-1, keepdims=True)) / (1 + np.exp(-z))
        return unnorm / unnorm.sum(-1, keepdims=True)
    if spec == "mlp":
        pre = h @ P["up.weight"].T + P["up.bias"]
        gelu = 0.5 * pre * (1 + np.vectorize(math.erf)(pre / math.sqrt(2)))
        return _softmax(out(h + gelu @ P["down.weight"].T))
    pi = _softmax(h @ P["prior.weight"].T + P["prior.bias"])  # (n, K)
    p = np.zeros((h.shape[0], head.vocab_size))
    for k in range(pi.shape[1]):
        ctx = np.tanh(h @ P["proj"][k].T + P["proj_bias"][k])
        p += pi[:, [k]] * _softmax(out(ctx))
    return p


@pytest.mark.parametrize("spec", ["softmax", "mos:3", "sigsoftmax", "mlp"])
def test_each_head_gives_probabilities_that_sum_to_one_and_match_numpy(spec):
    V, d, r = 120, 12, 5
    W, b = _own_head(V, d, seed=3)
    head = build_head(HeadSpec.parse(spec), V, d, r, factors=svd_factors(W), bias=torch.from_numpy(b).float(), seed=4)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # move every parameter off its initial value (MLP's M_2 starts at 0)
        for p in head.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    h = np.random.default_rng(6).standard_normal((30, d)) * 1.5
    p = _probs(head, h)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(p, _numpy_head(HeadSpec.parse(spec).kind, head, h), rtol=1e-9, atol=1e-12)
    # the cross-entropy lmsat trains on is -ln of these probabilities
    y = torch.arange(30) % V
    nll, _ = head.token_nll(torch.from_numpy(h), y)
    np.testing.assert_allclose(nll.detach().numpy(), -np.log(p[np.arange(30), y.numpy()]), rtol=1e-6)
    assert head.n_parameters() == sum(x.numel() for x in head.parameters())


def test_mos_with_the_true_parameters_reaches_the_exact_entropy_of_a_low_rank_probabilities_language():
    R = 6
    lang = make_language(LanguageSpec(family="low-rank-probs", vocab=40, contexts=16, rank=R, seed=3))
    mix, base = lang.factors["A"], lang.factors["B"]  # P = mix @ base: (C, R) mixture weights, (R, V) distributions
    np.testing.assert_allclose(mix @ base, lang.probs, atol=1e-12)
    C, V = lang.probs.shape
    d = C  # features: one-hot contexts
    out = FullRankHead(V, d).double()
    head = MixtureOfSoftmaxes(out, R).double()
    with torch.no_grad():
        head.prior.weight.copy_(torch.from_numpy(np.log(mix).T))  # pi(e_c) = softmax(log w_c) = w_c
        head.prior.bias.zero_()
        head.proj.zero_()  # component contexts tanh(c_k) = e_k / 2, whatever h
        head.proj_bias.copy_(torch.from_numpy(np.arctanh(0.5) * np.eye(R, d)))
        w = np.zeros((V, d))
        w[:, :R] = 2 * np.log(base).T  # W (e_k / 2) = ln q_k: component k is the base distribution q_k
        out.W.copy_(torch.from_numpy(w))
    h = np.eye(C)
    p = _probs(head, h)
    np.testing.assert_allclose(p, lang.probs, rtol=1e-9)
    cross_entropy = -(lang.probs * np.log(p)).sum(-1)
    np.testing.assert_allclose(cross_entropy, row_entropies(lang.probs), atol=1e-9)
    # a plain softmax head with rank-R logits cannot: its best is above the entropy (the bottleneck)
    assert np.linalg.matrix_rank(np.log(lang.probs) - np.log(lang.probs).mean(1, keepdims=True), tol=1e-6) > R


@pytest.mark.parametrize("text", ["mos", "mos:1", "mos:x", "softmax:2", "moe:4", "mos:999"])
def test_bad_head_names_are_user_errors(text):
    with pytest.raises(UserError, match="--head"):
        HeadSpec.parse(text)


def test_flops_and_parameters_are_counted_from_the_shapes():
    V, d, r, K = 1000, 32, 8, 4
    soft = build_head(HeadSpec(), V, d, r)
    mos = build_head(HeadSpec("mos", K), V, d, r)
    assert soft.flops_per_token() == 2 * r * (V + d)
    assert soft.n_parameters() == r * (V + d)
    assert mos.flops_per_token() == 2 * K * d * d + 2 * K * d + K * 2 * r * (V + d)
    assert mos.n_parameters() == r * (V + d) + (d * K + K) + K * d * d + K * d
