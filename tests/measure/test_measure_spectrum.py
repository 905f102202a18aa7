"""Singular entropy, effective rank and W-error against exact answers and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lmsat.measure.spectrum import (
    dimension_for_w_error,
    effective_rank,
    normalized_spectrum,
    singular_entropy,
    singular_values,
    w_error,
    w_error_curve,
)

spectra = arrays(np.float64, st.integers(1, 40), elements=st.floats(1e-6, 1e3, allow_nan=False)).map(lambda s: np.sort(s)[::-1])


@settings(max_examples=100, deadline=None)
@given(spectra, st.sampled_from(["squared", "linear"]))
def test_singular_entropy_is_kl_to_uniform_within_bounds(s, norm):
    k = len(s)
    p = s**2 / (s**2).sum() if norm == "squared" else s / s.sum()
    kl = float(np.sum(p * np.log(p * k)))  # KL(p || 1/k), independent formula
    value = singular_entropy(s, norm)
    assert value == pytest.approx(max(kl, 0.0), abs=1e-9)
    assert -1e-12 <= value <= np.log(k) + 1e-12
    assert 1 - 1e-9 <= effective_rank(s, norm) <= k + 1e-9
    assert effective_rank(s, norm) == pytest.approx(k * np.exp(-value), rel=1e-9)


def test_flat_spectrum_has_zero_entropy_and_full_effective_rank():
    s = np.full(64, 3.0)
    for norm in ("squared", "linear"):
        assert singular_entropy(s, norm) == pytest.approx(0.0, abs=1e-12)
        assert effective_rank(s, norm) == pytest.approx(64.0, rel=1e-12)


def test_rank_one_matrix_has_entropy_near_ln_d():
    rng = np.random.default_rng(0)
    w = np.outer(rng.normal(size=500), rng.normal(size=32))
    s = singular_values(w)
    assert singular_entropy(s) == pytest.approx(np.log(32), abs=1e-6)
    assert effective_rank(s) == pytest.approx(1.0, abs=1e-6)


def test_singular_values_match_numpy_svd():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(300, 20)).astype(np.float32)
    np.testing.assert_allclose(singular_values(w), np.linalg.svd(w.astype(np.float64), compute_uv=False), rtol=1e-10)


@settings(max_examples=100, deadline=None)
@given(spectra)
def test_w_error_curve_properties(s):
    curve = w_error_curve(s)
    assert curve[0] == pytest.approx(1.0, abs=1e-12)
    assert curve[-1] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(curve) <= 1e-12)
    assert np.all((curve >= 0) & (curve <= 1))


def test_w_error_is_the_best_rank_d_approximation_error():
    rng = np.random.default_rng(2)
    m = rng.normal(size=(40, 12)) @ np.diag(np.linspace(3, 0.1, 12)) @ rng.normal(size=(12, 12))
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    for d in range(13):
        approx = (u[:, :d] * s[:d]) @ vt[:d]
        direct = np.linalg.norm(m - approx) / np.linalg.norm(m)
        assert w_error(s, d) == pytest.approx(direct, abs=1e-10)


def test_truncated_spectrum_with_exact_frobenius_norm():
    rng = np.random.default_rng(3)
    m = rng.normal(size=(50, 30))
    s = np.linalg.svd(m, compute_uv=False)
    full = w_error_curve(s)
    top = w_error_curve(s[:10], frobenius_norm=np.linalg.norm(m))
    np.testing.assert_allclose(top, full[:11], atol=1e-10)
    assert dimension_for_w_error(s, 0.5) == int(np.argmax(full <= 0.5))
    assert dimension_for_w_error(s[:2], 0.01, frobenius_norm=np.linalg.norm(m)) is None


def test_normalized_spectrum():
    s = np.array([4.0, 2.0, 1.0])
    np.testing.assert_allclose(normalized_spectrum(s), [1.0, 0.5, 0.25])
    np.testing.assert_allclose(normalized_spectrum(s, 2), [1.0, 0.5])
