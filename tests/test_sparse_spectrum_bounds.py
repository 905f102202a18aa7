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
