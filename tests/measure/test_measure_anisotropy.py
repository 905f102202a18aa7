"""Anisotropy: the O(n d) closed form against the O(n^2 d) pairwise definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lmsat.measure.anisotropy import AnisotropyAccumulator, anisotropy, anisotropy_pairwise


def brute_force(h: np.ndarray) -> float:
    """Mean cosine similarity over ordered pairs i != j, by explicit double loop."""
    n = h.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += float(h[i] @ h[j] / (np.linalg.norm(h[i]) * np.linalg.norm(h[j])))
    return total / (n * (n - 1))


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 8)), elements=finite))
def test_closed_form_equals_pairwise_mean(h):
    norms = np.linalg.norm(h, axis=1)
    h = h[norms > 1e-6]
    if h.shape[0] < 2:
        return
    assert anisotropy(h) == pytest.approx(brute_force(h), abs=1e-9)


def test_closed_form_equals_pairwise_on_larger_random_sets():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(500, 64)) + 0.7  # a shared offset makes them anisotropic
    assert anisotropy(h) == pytest.approx(anisotropy_pairwise(h), abs=1e-9)
    assert 0.2 < anisotropy(h) < 0.5


def test_streamed_accumulator_equals_one_shot():
    rng = np.random.default_rng(1)
    h = torch.from_numpy(rng.normal(size=(4, 37, 16)) + 0.2)
    acc = AnisotropyAccumulator()
    for part in h:  # batches of 37 vectors, float64
        acc.update(part)
    flat = h.reshape(-1, 16)
    assert acc.n == 4 * 37
    assert acc.value == pytest.approx(anisotropy_pairwise(flat), abs=1e-9)
    assert acc.mean_norm == pytest.approx(float(flat.norm(dim=1).mean()), rel=1e-9)
    # float32 (and half) representations: unit vectors in float32, sum in float64.
    acc32 = AnisotropyAccumulator()
    for part in h.float():
        acc32.update(part)
    assert acc32.value == pytest.approx(anisotropy_pairwise(flat), abs=1e-6)
    acc16 = AnisotropyAccumulator()
    acc16.update(h.bfloat16())
    assert acc16.value == pytest.approx(anisotropy_pairwise(h.bfloat16().double().reshape(-1, 16)), abs=1e-5)


def test_known_extremes():
    same = np.tile([[1.0, 2.0, 3.0]], (10, 1)) * np.arange(1, 11)[:, None]  # one direction
    assert anisotropy(same) == pytest.approx(1.0, abs=1e-12)
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]])  # minimum -1/(n-1) = -1
    assert anisotropy(opposite) == pytest.approx(-1.0, abs=1e-12)
    rng = np.random.default_rng(2)
    iso = rng.normal(size=(20000, 32))  # isotropic Gaussian: E[A] = 0, sd ~ 1/(n sqrt(d))
    assert abs(anisotropy(iso)) < 1e-3
