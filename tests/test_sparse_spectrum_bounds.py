"""Bounds on d(W-error <= t) from a truncated spectrum contain the exact value (issue 15 item 1)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lmsat.measure.sparse_spectrum import dimension_bounds, sparse_singular_values
from lmsat.measure.spectrum import dimension_for_w_error


@pytest.mark.parametrize("seed", [0, 1])
def test_truncated_bounds_contain_the_exact_dimension(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # a sparse matrix with one big connected block and a decaying spectrum
    dense = rng.random((900, 300)) * (rng.random((900, 300)) < 0.05) * np.linspace(1, 0.05, 300) ** 2
    m = sp.csr_matrix(dense)
    exact = np.linalg.svd(dense, compute_uv=False)
    fro = float(np.sqrt((dense**2).sum()))
    for k in (20, 150):
        spec = sparse_singular_values(m, method="lanczos", truncated_k=k, device="cpu")
        assert not spec.complete and spec.rank_bound is not None and spec.rank_bound >= np.sum(exact > 1e-10)
        for t in (0.5, 0.2, 0.1, 0.05):
            lo, hi = dimension_bounds(spec.singular_values, spec.frobenius_norm, spec.rank_bound, t)
            d = dimension_for_w_error(exact, t, fro)
            assert d is not None and lo <= d <= hi, (k, t, lo, d, hi)
            if d <= len(spec.singular_values) - 1:
                assert lo == hi == d  # exact where the computed values reach it


def test_complete_spectrum_gives_exact_dimensions() -> None:
    rng = np.random.default_rng(3)
    dense = rng.random((200, 80)) * (rng.random((200, 80)) < 0.2)
    spec = sparse_singular_values(sp.csr_matrix(dense), device="cpu")
    exact = np.linalg.svd(dense, compute_uv=False)
    for t in (0.5, 0.1, 0.01):
        d = dimension_for_w_error(exact, t)
        assert dimension_bounds(spec.singular_values, spec.frobenius_norm, spec.rank_bound, t) == (d, d)


def test_float32_dense_block_within_its_stated_bound() -> None:
    from lmsat.measure.sparse_spectrum import (
        _dense_block,
        float32_eigenvalue_bound,
        gram_dense,
    )

    rng = np.random.default_rng(4)
    dense = rng.random((600, 250)) * (rng.random((600, 250)) < 0.1)
    gram = gram_dense(sp.csr_matrix(dense))
    exact = np.sort(np.linalg.eigvalsh(gram))[::-1]
    single, _ = _dense_block(gram, "cpu", single=True)
    bound = float32_eigenvalue_bound(gram.shape[0], float(single[0]))
    assert np.max(np.abs(single - np.clip(exact, 0, None))) <= bound


def test_float32_dense_block_keeps_the_energy_of_a_decaying_spectrum():
    """A float32 block keeps its small eigenvalues: the sum stays the trace (the exact |P|_F^2 share),
    so W-error past the large eigenvalues is not silently cut to zero (it was: values under
    10 b eps_32 lambda_max, 2.4% of lambda_max at b = 2000, were zeroed)."""
    from lmsat.measure.sparse_spectrum import _dense_block

    rng = np.random.default_rng(0)
    b = 2000
    q, _ = np.linalg.qr(rng.standard_normal((b, b)))
    lam = 1.0 / np.arange(1, b + 1) ** 2  # s_i = 1/i, as n-gram spectra decay
    gram = (q * lam) @ q.T
    single, _ = _dense_block(gram, "cpu", single=True)
    assert abs(single.sum() - lam.sum()) / lam.sum() < 1e-4
    # the tail beyond the 20 largest values, 3% of the energy, is still there
    tail = np.sort(single)[::-1][20:].sum()
    assert tail == pytest.approx(lam[20:].sum(), rel=1e-2)
