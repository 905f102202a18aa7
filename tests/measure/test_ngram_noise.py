"""Sampling-noise floor of P (issue 15 item 4) against the exact noise of a source with known rank.

The source: C contexts, V next tokens, true next-token distributions Q = A B with A (C x R), B (R x V)
row-stochastic, so rank Q = R. Each context is seen N(c) times (some once) and its row of counts is
drawn multinomially: the true noise |P - a Q|_F^2 is known here, independently of lmsat's estimate.
"""

from __future__ import annotations

import numpy as np
import pytest

from lmsat.measure.ngram import (
    NGramCounts,
    next_token_matrix,
    noise_floor_dimension,
    sampling_noise,
)
from lmsat.measure.spectrum import w_error_curve

C, V, R = 3000, 40, 5


def source(seed: int, singletons: float) -> tuple[NGramCounts, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.full(R, 0.2), size=C) @ rng.dirichlet(np.full(V, 0.3), size=R)
    n_c = np.where(rng.random(C) < singletons, 1, 2 + rng.poisson(40, size=C))
    counts = np.stack([rng.multinomial(n, row) for n, row in zip(n_c, q)])
    rows, cols = np.nonzero(counts)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=C))])
    table = NGramCounts(2, max(C, V), np.arange(C)[:, None], indptr, cols.astype(np.int64), counts[rows, cols].astype(np.int64), int(n_c.sum()) + 1)
    return table, q


@pytest.mark.parametrize("row_weight", ["uniform", "frequency"])
def test_noise_energy_matches_the_true_noise(row_weight: str) -> None:
    table, q = source(0, singletons=0.3)
    p = next_token_matrix(table, row_weight=row_weight)
    n_c = p.context_counts.astype(float)
    scale = np.sqrt(n_c / n_c.sum()) if row_weight == "frequency" else np.ones(C)
    true_noise = float(((p.matrix.toarray() - scale[:, None] * q[p.rows][:, p.columns]) ** 2).sum())
    # all V columns are observed here, so q[:, p.columns] is all of Q
    assert p.shape[1] == V
    est = sampling_noise(p)
    assert est.energy_low <= true_noise <= est.energy_high
    assert est.energy == pytest.approx(true_noise, rel=0.1)
    assert est.singleton_fraction == pytest.approx(float((n_c == 1).mean()))
    assert est.frobenius_norm == pytest.approx(float(np.sqrt((p.matrix.toarray() ** 2).sum())))


def _noise_dim(table: NGramCounts, **kw: object) -> tuple[int | None, float]:
    p = next_token_matrix(table, **kw)  # type: ignore[arg-type]
    curve = w_error_curve(np.linalg.svd(p.matrix.toarray(), compute_uv=False))
    est = sampling_noise(p)
    return noise_floor_dimension(curve, est.floor), est.floor


def test_curve_reaches_the_noise_floor_at_the_true_rank() -> None:
    # every context seen >= 2 times: past the true rank the curve is noise, before it signal
    assert _noise_dim(source(1, singletons=0.0)[0])[0] == R
    # a fifth of the contexts seen once (one-hot rows, nearly pure noise): the floor rises and is reached
    # before R (noise hides signal); --min-count 2 or frequency rows bring it back to the true rank
    table = source(1, singletons=0.2)[0]
    d_default, floor_default = _noise_dim(table)
    d_min2, floor_min2 = _noise_dim(table, min_count=2)
    d_freq, _ = _noise_dim(table, row_weight="frequency")
    assert d_default is not None and d_default < R and floor_min2 < floor_default
    assert d_min2 == R and d_freq == R


def test_one_hot_fraction() -> None:
    table, _ = source(2, singletons=0.6)
    p = next_token_matrix(table)
    dense = p.matrix.toarray()
    assert sampling_noise(p).one_hot_fraction == pytest.approx(float(((dense > 0).sum(axis=1) == 1).mean()))
