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


def _text_like_matrix(tokens: int, seed: int = 0) -> sp.csr_matrix:
    """P of a small 2nd-order text-like source (the benchmark's generator, vocabulary 6,000)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_ngram_scale import text_like_stream

    from lmsat.measure.ngram import count_ngrams, next_token_matrix

    ids = text_like_stream(tokens, 6_000, seed=seed, classes=5_000, chains=500)
    return next_token_matrix(count_ngrams(ids, 5, 6_000)).matrix


def test_tail_estimate_matches_the_exact_dense_dims() -> None:
    """Past the dense limit, the top values + stochastic Lanczos quadrature estimate every dim within 2% of
    the exact (dense float64) value, and the interval holds it (issue 15 item 1)."""
    from lmsat.measure.sparse_spectrum import spectrum_dimensions

    m = _text_like_matrix(300_000)
    exact = sparse_singular_values(m, device="cpu")
    assert exact.complete and max(exact.blocks["large_blocks"]) > 1_500
    est = sparse_singular_values(m, device="cpu", max_dense=500, tail_top=64, tail_probes=12, tail_steps=120)
    assert est.tail is not None and not est.complete
    dims = spectrum_dimensions(est, (0.5, 0.2, 0.1, 0.05))
    for t, d in dims.items():
        e = dimension_for_w_error(exact.singular_values, t, exact.frobenius_norm)
        assert e is not None
        assert d["lo"] <= e <= d["hi"], (t, d, e)
        if d["how"] == "estimated":
            assert abs(d["estimate"] - e) <= 0.02 * e, (t, d, e)
    # the guaranteed top-k bracket always holds the dim too
    for t in (0.5, 0.1):
        lo, hi = dimension_bounds(est.singular_values, est.frobenius_norm, est.rank_bound, t)
        assert lo <= dimension_for_w_error(exact.singular_values, t, exact.frobenius_norm) <= hi


def test_quadrature_of_a_known_spectrum() -> None:
    """Lanczos quadrature on a diagonal operator with known eigenvalues: count and energy above a level."""
    from lmsat.measure.sparse_spectrum import TailQuadrature, lanczos_quadrature

    rng = np.random.default_rng(0)
    lam = np.sort(rng.gamma(0.5, 1.0, 3_000))[::-1]
    nodes, weights, _ = lanczos_quadrature(lambda x: lam[:, None] * x if x.ndim == 2 else lam * x, 3_000, None, probes=16, steps=80)
    tail = TailQuadrature(known=np.zeros(0), blocks=[{"nodes": nodes, "weights": weights, "size": 3_000, "k": 0,
                                                      "energy": float(lam.sum())}], total=float(lam.sum()), probes=16, steps=80)
    c = tail.curve()
    for q in (0.2, 0.5, 0.8):
        g = int(q * len(c["tau"]))
        above = lam > c["tau"][g]
        assert c["count_lo"][g] <= above.sum() <= c["count_hi"][g]
        assert c["energy_lo"][g] <= lam[above].sum() <= c["energy_hi"][g]
        assert abs(c["count"][g] - above.sum()) <= 0.03 * 3_000
    for t in (0.5, 0.2, 0.1):
        exact = dimension_for_w_error(lam ** 0.5, t)
        est, lo, hi = tail.dimension(t)
        assert lo <= exact <= hi and abs(est - exact) <= 0.03 * exact + 2, (t, est, lo, hi, exact)


def test_float32_error_widens_the_bracket() -> None:
    """dimension_bounds with a head error: the bracket holds every d whose tail is within the error of the threshold."""
    s = np.sqrt(1.0 / np.arange(1, 401) ** 1.5)
    fro = float(np.sqrt((s * s).sum()))
    exact = dimension_for_w_error(s, 0.2, fro)
    assert dimension_bounds(s, fro, 400, 0.2) == (exact, exact)
    err = 1e-3 * fro * fro
    lo, hi = dimension_bounds(s, fro, 400, 0.2, head_error=err)
    tail = fro * fro - np.concatenate([[0.0], np.cumsum(s * s)])
    assert lo == int(np.nonzero(tail - err <= 0.04 * fro * fro)[0][0]) and hi == int(np.nonzero(tail + err <= 0.04 * fro * fro)[0][0])
    assert lo < exact < hi
