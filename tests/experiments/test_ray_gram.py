"""`ngram-rank --ray`: P^T P accumulated from context buckets gives the spectrum of the one-process P.

Runs the bucket tasks with the local executor (the same functions a Ray task runs; the
Ray run itself is in tests/test_ray.py). The reference is independent of the Gram path:
``next_token_matrix`` builds P from the whole table, ``sparse_singular_values`` takes its
singular values (blocks of P, the smaller side's Gram), ``sampling_noise`` reads P's rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from lmsat.executor import LocalExecutor
from lmsat.experiments.ngram import NGramSettings
from lmsat.experiments.ngram_ray import p_spectrum_distributed
from lmsat.measure.ngram import count_ngrams, next_token_matrix, sampling_noise
from lmsat.measure.sparse_spectrum import sparse_singular_values


@pytest.fixture(scope="module")
def counts():
    """3-grams of a Zipf stream over 3,000 ids: one giant block, hundreds of one-value blocks, a dozen small ones."""
    rng = np.random.default_rng(1)
    return count_ngrams(rng.zipf(1.15, 30_000) % 3000, 3, 3000)


@pytest.mark.parametrize("options", [
    {},  # complete: every block diagonalised
    {"min_count": 2, "max_contexts": 1500, "row_weight": "frequency"},  # a choice over all contexts, global row weights
    {"min_count": 2, "top_k": 20},  # the top 20 by Lanczos
])
def test_gram_from_buckets_gives_the_spectrum_and_noise_of_p(counts, options):
    settings = NGramSettings(n=3, **options)
    p = next_token_matrix(counts, min_count=settings.min_count, max_contexts=settings.max_contexts,
                          selection=settings.context_selection, seed=settings.seed, row_weight=settings.row_weight)
    ref = sparse_singular_values(p.matrix, top_k=settings.top_k, method="auto", device="cpu", seed=settings.seed)
    summary, noise, got = p_spectrum_distributed(counts, settings, "cpu", LocalExecutor(), n_buckets=4)

    assert summary.shape == p.shape and summary.n_ngrams_kept == p.n_ngrams_kept == p.matrix.nnz
    assert summary.n_occurrences_kept == p.n_occurrences_kept
    assert got.blocks == ref.blocks
    if not options:  # every kind of block is there: one value, small, large
        assert ref.blocks["trivial_blocks"] > 100 and ref.blocks["small_blocks"] > 0 and ref.blocks["large_blocks"]
    assert got.rank_bound == ref.rank_bound and got.complete == ref.complete == ("top_k" not in options)
    assert got.frobenius_norm == pytest.approx(ref.frobenius_norm, rel=1e-13)
    assert len(got.singular_values) == len(ref.singular_values)
    np.testing.assert_allclose(got.singular_values, ref.singular_values, rtol=1e-9, atol=1e-12)
    expected = sampling_noise(p).as_dict()
    for name, value in noise.as_dict().items():
        assert value == pytest.approx(expected[name], rel=1e-10, abs=1e-13), name


def test_no_context_kept_gives_an_empty_p(counts):
    summary, noise, spectrum = p_spectrum_distributed(counts, NGramSettings(n=3, min_count=10**9), "cpu", LocalExecutor())
    assert summary.shape == (0, 0) and noise is None and spectrum is None
