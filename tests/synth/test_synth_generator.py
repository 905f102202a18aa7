"""Exact properties of the synthetic-language generators (pure numpy, no model)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lmsat.errors import UserError
from lmsat.synth.generator import (
    LanguageSpec,
    centered_log_probs,
    context_of,
    contexts_of_chains,
    empirical_context_entropy,
    generate,
    make_language,
    row_entropies,
    sample_chains,
    stationary_context_distribution,
    svd_truncation_gaps,
)


@st.composite
def small_specs(draw, family: str) -> LanguageSpec:
    vocab = draw(st.integers(4, 40))
    contexts = draw(st.integers(2, vocab))
    rank = draw(st.integers(1, min(contexts, vocab - 1)))
    return LanguageSpec(family=family, vocab=vocab, contexts=contexts, rank=rank, order=1, seed=draw(st.integers(0, 10**6)))


@settings(max_examples=25, deadline=None)
@given(small_specs("low-rank-logits"))
def test_low_rank_logits_have_rank_R(spec: LanguageSpec) -> None:
    lang = make_language(spec)
    # The logits that give P, per-row shift removed, have exactly rank R; P rows are distributions.
    assert np.linalg.matrix_rank(centered_log_probs(lang)) == spec.rank
    np.testing.assert_allclose(lang.probs.sum(axis=1), 1.0, atol=1e-12)
    assert (lang.probs > 0).all()


@settings(max_examples=25, deadline=None)
@given(small_specs("low-rank-probs"))
def test_low_rank_probs_have_rank_R(spec: LanguageSpec) -> None:
    lang = make_language(spec)
    # P = A B with inner dimension R: rank P <= R, and by Sylvester's inequality rank P = R exactly when A and B
    # both have rank R (a tiny Dirichlet concentration can draw two equal one-hot rows, and then they do not).
    rank = np.linalg.matrix_rank(lang.probs)
    assert rank <= spec.rank
    if np.linalg.matrix_rank(lang.factors["A"]) == spec.rank == np.linalg.matrix_rank(lang.factors["B"]):
        assert rank == spec.rank
    np.testing.assert_allclose(lang.probs.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(lang.probs, lang.factors["A"] @ lang.factors["B"], atol=1e-15)


def test_the_two_families_are_low_rank_in_opposite_spaces() -> None:
    c, v, r = 64, 96, 8
    logits = make_language(LanguageSpec(family="low-rank-logits", vocab=v, contexts=c, rank=r))
    probs = make_language(LanguageSpec(family="low-rank-probs", vocab=v, contexts=c, rank=r))
    # low-rank logits: P itself is of full rank; low-rank P: its log is of full rank.
    assert np.linalg.matrix_rank(logits.probs) == min(c, v)
    assert np.linalg.matrix_rank(centered_log_probs(probs)) == min(c, v)


def test_logit_scale_is_one_over_temperature() -> None:
    for t in (0.5, 2.0):
        z = centered_log_probs(make_language(LanguageSpec(vocab=400, contexts=300, rank=20, temperature=t)))
        assert z.std() == pytest.approx(1.0 / t, rel=0.08)


def test_contexts_follow_the_kgram_rule_with_the_fixed_start() -> None:
    lang = make_language(LanguageSpec(vocab=5, contexts=7, rank=3, order=2, seed=3))
    tokens, contexts = sample_chains(lang, 3, 40, np.random.default_rng(0))
    assert lang.context_table is not None and sorted(set(lang.context_table)) == list(range(7))  # surjective
    for chain, ctx in zip(tokens, contexts):
        prev = [0, 0]  # the virtual start prefix w0 w0
        for x, c in zip(chain, ctx):
            assert c == lang.context_table[prev[0] * 5 + prev[1]]
            prev = [prev[1], int(x)]
    np.testing.assert_array_equal(contexts_of_chains(lang, tokens), contexts)


def test_hashed_contexts_for_large_kgram_spaces() -> None:
    lang = make_language(LanguageSpec(vocab=1100, contexts=16, rank=4, order=2, seed=1))
    assert lang.context_table is None and lang.hash_keys is not None
    kgrams = np.random.default_rng(0).integers(0, 1100, size=(5000, 2))
    ctx = context_of(lang, kgrams)
    expected = [int((int(lang.hash_keys[0, a]) ^ int(lang.hash_keys[1, b])) % 16) for a, b in kgrams]
    np.testing.assert_array_equal(ctx, expected)
    assert set(ctx.tolist()) == set(range(16))


def test_next_token_frequencies_follow_the_true_distributions() -> None:
    lang = make_language(LanguageSpec(vocab=8, contexts=6, rank=3, order=2, seed=5))
    sample = generate(lang, 300_000, chain_tokens=5000)
    counts = np.zeros_like(lang.probs)
    np.add.at(counts, (sample.contexts, sample.tokens), 1)
    n_c = counts.sum(axis=1, keepdims=True)
    expected = n_c * lang.probs
    # Given the visits, next tokens are i.i.d. draws from P[c]: Pearson chi-square with C (V - 1) dof.
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = lang.probs.shape[0] * (lang.probs.shape[1] - 1)
    assert stats.chi2.sf(chi2, dof) > 1e-4
    # and they converge: total variation shrinks like 1/sqrt(n) (x10 tokens -> about /3.2).
    small = generate(lang, 30_000, chain_tokens=5000)
    c_small = np.zeros_like(lang.probs)
    np.add.at(c_small, (small.contexts, small.tokens), 1)
    tv = lambda c: 0.5 * np.abs(c / c.sum(axis=1, keepdims=True) - lang.probs).sum(axis=1).mean()  # noqa: E731
    assert tv(counts) < 0.45 * tv(c_small)
    assert tv(counts) < 0.02


def _dense_stationary(lang) -> np.ndarray:
    """Independent: the dense k-gram transition matrix and its left eigenvector for eigenvalue 1."""
    v, k = lang.vocab, lang.order
    states = list(itertools.product(range(v), repeat=k))
    index = {s: i for i, s in enumerate(states)}
    t = np.zeros((len(states), len(states)))
    for s in states:
        c = context_of(lang, np.array([s]))[0]
        for y in range(v):
            t[index[s], index[s[1:] + (y,)]] += lang.probs[c, y]
    w, vecs = np.linalg.eig(t.T)
    pi = np.real(vecs[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    ctx = context_of(lang, np.array(states))
    return np.bincount(ctx, weights=pi, minlength=lang.spec.contexts)


def test_stationary_entropy_matches_a_dense_eigenvector() -> None:
    lang = make_language(LanguageSpec(vocab=4, contexts=5, rank=2, order=2, seed=11))
    pi = stationary_context_distribution(lang)
    np.testing.assert_allclose(pi, _dense_stationary(lang), atol=1e-10)
    exact = float(pi @ row_entropies(lang.probs))
    sample = generate(lang, 400_000, chain_tokens=20_000)
    # The realised entropy of a long stream converges to it; so does the empirical-context one.
    assert abs(sample.realised_entropy() - exact) < 5 * sample.entropy_standard_error()
    assert abs(empirical_context_entropy(lang.probs, sample.context_counts(5)) - exact) < 0.01


def test_entropy_of_short_chains_matches_exact_enumeration() -> None:
    """Chains of T tokens from the start context: E[mean_t -ln p(x_t | c_t)] by enumerating all V^T chains."""
    lang = make_language(LanguageSpec(vocab=3, contexts=3, rank=2, order=1, temperature=0.7, seed=2))
    t_len = 5
    exact = 0.0
    for seq in itertools.product(range(3), repeat=t_len):
        ctx = contexts_of_chains(lang, np.array([seq]))[0]
        logp = lang.log_probs[ctx, list(seq)]
        exact += np.exp(logp.sum()) * (-logp.mean())
    sample = generate(lang, 200_000 * t_len, chain_tokens=t_len)
    assert len(sample.chain_lengths) == 200_000
    assert abs(sample.realised_entropy() - exact) < 4 * sample.entropy_standard_error()
    # sanity of the reference: the start context makes it differ from the stationary value
    assert np.isfinite(exact) and 0 < exact < np.log(3)


def test_generation_is_deterministic_and_heldout_is_independent() -> None:
    lang = make_language(LanguageSpec(vocab=16, contexts=16, rank=4, seed=9))
    a = generate(lang, 3000, chain_tokens=1000)
    b = generate(make_language(LanguageSpec(vocab=16, contexts=16, rank=4, seed=9)), 3000, chain_tokens=1000)
    held = generate(lang, 3000, chain_tokens=1000, heldout=True)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    # held-out text is another draw, not a copy: agreement is far below 1 (it is about sum_v p_v^2)
    assert (a.tokens == held.tokens).mean() < 0.75
    assert [len(c) for c in generate(lang, 2500, chain_tokens=1000).chains()] == [1000, 1000, 500]


def test_svd_truncation_gap_is_the_kl_of_truncated_logits() -> None:
    lang = make_language(LanguageSpec(vocab=30, contexts=20, rank=5, temperature=0.5, seed=7))
    w = np.random.default_rng(0).dirichlet(np.ones(20))
    gaps = svd_truncation_gaps(lang, w, 20)
    h = row_entropies(lang.probs)
    assert gaps[0] == pytest.approx(np.log(30) - w @ h, abs=1e-12)  # rank 0: uniform prediction
    assert gaps[4] > 0.01 and gaps[5] < 1e-12 and gaps[20] < 1e-12  # exact from rank R on
    # independent: truncate the centred log-probabilities with numpy and take the weighted KL
    z = lang.log_probs - lang.log_probs.mean(axis=1, keepdims=True)
    u, s, vt = np.linalg.svd(z)
    z3 = (u[:, :3] * s[:3]) @ vt[:3]
    log_q = z3 - np.log(np.exp(z3).sum(axis=1, keepdims=True))
    assert gaps[3] == pytest.approx(float(w @ (lang.probs * (lang.log_probs - log_q)).sum(axis=1)), rel=1e-9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(vocab=16, contexts=8, rank=9), "--rank 9 is impossible"),
        (dict(vocab=4, contexts=20, rank=2, order=2), "--contexts 20 exceeds the 16 possible 2-grams"),
        (dict(vocab=16, contexts=8, rank=2, temperature=0.0), "--temperature must be a positive"),
        (dict(family="low-rank-something"), "--family must be one of"),
    ],
)
def test_impossible_languages_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        make_language(LanguageSpec(**kwargs))
