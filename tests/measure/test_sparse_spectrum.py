"""The blockwise sparse spectrum against dense SVD (numpy) on small matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from lmsat.measure.sparse_spectrum import (
    SMALL_BLOCK,
    bipartite_blocks,
    frobenius_norm,
    gram_dense,
    lanczos_top_eigenvalues,
    sparse_singular_values,
    split_gram,
    subspace_top_eigenvalues,
)
from lmsat.measure.spectrum import w_error_curve


def dense_singular_values(p: sp.spmatrix) -> np.ndarray:
    s = np.linalg.svd(p.toarray(), compute_uv=False)
    return s[s > s[0] * 1e-7] if len(s) and s[0] > 0 else s[:0]


@st.composite
def sparse_matrices(draw):
    rows = draw(st.integers(1, 60))
    cols = draw(st.integers(1, 60))
    density = draw(st.sampled_from([0.02, 0.05, 0.15, 0.5]))
    seed = draw(st.integers(0, 10_000))
    m = sp.random(rows, cols, density=density, random_state=seed, format="csr")
    if m.nnz == 0:
        m = sp.csr_matrix(([1.0], ([0], [0])), shape=(rows, cols))
    # Row-stochastic like an n-gram matrix (rows sum to 1).
    sums = np.asarray(m.sum(1)).ravel()
    sums[sums == 0] = 1
    return sp.diags(1 / sums) @ m


@settings(max_examples=120, deadline=None)
@given(sparse_matrices(), st.sampled_from(["auto", "dense"]))
def test_blockwise_spectrum_equals_dense_svd(p, method):
    ref = dense_singular_values(p)
    got = sparse_singular_values(p, method=method, device="cpu")
    assert got.complete
    assert len(got.singular_values) == len(ref)  # numerical rank agrees
    # Through the Gram matrix, eigenvalues s_i^2 carry absolute rounding ~ eps * s_1^2.
    np.testing.assert_allclose(got.singular_values**2, ref**2, rtol=1e-9, atol=1e-12 * ref[0] ** 2)
    assert got.frobenius_norm == pytest.approx(np.linalg.norm(p.toarray()), rel=1e-13)
    assert got.accuracy["trace_relative_error"] < 1e-12
    np.testing.assert_allclose(w_error_curve(got.singular_values, got.frobenius_norm), w_error_curve(ref), atol=1e-7)


def block_diagonal(sizes: list[tuple[int, int]], seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    blocks = [sp.csr_matrix(rng.random((r, c)) + 0.05) for r, c in sizes]  # dense blocks: connected
    m = sp.block_diag(blocks, format="csr")
    perm_r, perm_c = rng.permutation(m.shape[0]), rng.permutation(m.shape[1])
    return m[perm_r][:, perm_c].tocsr()


def test_blocks_are_found_and_each_kind_of_block_is_exact():
    # 1-column and 1-row blocks (trivial), small blocks (batched) and one large block (dense Gram).
    sizes = [(5, 1), (1, 4), (3, 3), (7, 2), (2, 9), (SMALL_BLOCK + 40, SMALL_BLOCK + 10), (1, 1)]
    p = block_diagonal(sizes)
    n_blocks, row_block, col_block = bipartite_blocks(p)
    assert n_blocks == len(sizes)
    assert sorted(np.bincount(col_block).tolist()) == sorted(c for _, c in sizes)
    got = sparse_singular_values(p, device="cpu")
    assert got.blocks["trivial_blocks"] == 3
    assert got.blocks["small_blocks"] == 3
    assert got.blocks["dense_block_sizes"] == [SMALL_BLOCK + 10]
    np.testing.assert_allclose(got.singular_values, dense_singular_values(p), rtol=1e-9)


def test_empty_columns_are_ignored_as_zero_singular_values():
    p = sp.csr_matrix(np.array([[0.5, 0, 0.5, 0], [0, 0, 1.0, 0]]))
    got = sparse_singular_values(p, device="cpu")
    np.testing.assert_allclose(got.singular_values, dense_singular_values(p), rtol=1e-12)
    assert frobenius_norm(p) == pytest.approx(np.sqrt(0.25 + 0.25 + 1.0), rel=1e-15)


@pytest.fixture(scope="module")
def large_block() -> sp.csr_matrix:
    """One connected 2400 x 400 block with a decaying spectrum (rows: sparse distributions)."""
    rng = np.random.default_rng(7)
    m = sp.random(2400, 400, density=0.02, random_state=7, format="csr") + sp.csr_matrix(
        (np.ones(2400), (np.arange(2400), rng.integers(0, 400, 2400))), shape=(2400, 400)
    )
    m = m @ sp.diags(1.0 / np.arange(1, 401) ** 0.7)
    sums = np.asarray(m.sum(1)).ravel()
    return (sp.diags(1 / sums) @ m).tocsr()


@pytest.mark.parametrize("method", ["lanczos", "subspace"])
def test_truncated_top_k_equals_dense_top_k_within_reported_residuals(large_block, method):
    ref = dense_singular_values(large_block)
    k = 30
    got = sparse_singular_values(large_block, top_k=k, method=method, device="cpu")
    assert not got.complete and len(got.singular_values) == k
    theta, ref_eig = got.singular_values**2, ref[:k] ** 2
    # Each Ritz value lies within its residual norm of an eigenvalue; the largest residual bounds them all.
    bound = got.accuracy["max_residual_relative"] * theta[0]
    assert np.max(np.abs(theta - ref_eig)) <= bound + 1e-12 * theta[0]  # + rounding of the dense reference
    assert np.max(np.abs(got.singular_values - ref[:k]) / ref[0]) < 1e-3
    # W-error from the top-k values and the exact |P|_F equals the dense curve's first k+1 points.
    np.testing.assert_allclose(w_error_curve(got.singular_values, got.frobenius_norm), w_error_curve(ref)[: k + 1], atol=1e-3)


def test_auto_falls_back_to_top_k_for_blocks_over_max_dense(large_block):
    ref = dense_singular_values(large_block)
    # tail_probes=0: no tail estimate, the top truncated_k values only (the default adds the tail's quadrature)
    got = sparse_singular_values(large_block, method="auto", device="cpu", max_dense=200, truncated_k=25, tail_probes=0)
    assert got.method.endswith("lanczos") and not got.complete and got.tail is None
    assert len(got.singular_values) == 25
    np.testing.assert_allclose(got.singular_values, ref[:25], rtol=1e-8)
    assert got.accuracy["w_error_squared_bound"] < 1e-8


def test_eigen_solvers_directly_match_dense_eigenvalues(large_block):
    gram = (large_block.T @ large_block).toarray()
    ref = np.sort(np.linalg.eigvalsh(gram))[::-1][:12]
    theta_l, info_l = lanczos_top_eigenvalues(large_block, 12)
    theta_s, info_s = subspace_top_eigenvalues(large_block, 12, device="cpu", max_iters=200, tol=1e-10)
    np.testing.assert_allclose(theta_l, ref, rtol=1e-10)
    np.testing.assert_allclose(theta_s, ref, rtol=1e-8)
    assert info_s["converged"] and info_s["max_residual_relative"] < 1e-10


def test_top_k_with_dense_blocks_keeps_the_k_largest():
    p = block_diagonal([(6, 4), (SMALL_BLOCK + 5, SMALL_BLOCK + 3), (3, 1)], seed=4)
    ref = dense_singular_values(p)
    got = sparse_singular_values(p, top_k=10, device="cpu")
    np.testing.assert_allclose(got.singular_values, ref[:10], rtol=1e-9)
    assert not got.complete


def ngram_like(rows: int, cols: int, seed: int) -> sp.csr_matrix:
    """Mostly one-hot rows (contexts seen with one next token) plus some spread rows, row-stochastic."""
    rng = np.random.default_rng(seed)
    one_hot = sp.csr_matrix((np.ones(rows), (np.arange(rows), rng.zipf(1.3, rows) % cols)), shape=(rows, cols))
    spread = sp.random(rows // 10, cols, density=0.05, random_state=seed, format="csr")
    m = sp.vstack([one_hot, spread]).tocsr()
    sums = np.asarray(m.sum(1)).ravel()
    keep = sums > 0
    return (sp.diags(1 / sums[keep]) @ m[keep]).tocsr()


@settings(max_examples=30, deadline=None)
@given(st.integers(20, 400), st.integers(2, 80), st.integers(0, 1000))
def test_split_gram_folds_one_hot_rows_into_the_diagonal(rows, cols, seed):
    p = ngram_like(rows, cols, seed)
    diag, multi = split_gram(p)
    assert np.all(np.diff(multi.indptr) >= 2)
    np.testing.assert_allclose(gram_dense(p), (p.T @ p).toarray(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.diag((multi.T @ multi).toarray()) + diag, np.asarray(p.multiply(p).sum(0)).ravel(), rtol=1e-12)


@pytest.mark.parametrize("method", ["lanczos", "subspace"])
def test_truncated_methods_on_an_ngram_like_matrix(method):
    p = ngram_like(6000, 500, seed=5)
    ref = dense_singular_values(p)
    got = sparse_singular_values(p, top_k=20, method=method, device="cpu")
    theta = got.singular_values**2
    assert np.max(np.abs(theta - ref[:20] ** 2)) <= (got.accuracy["max_residual_relative"] + 1e-12) * theta[0]
    np.testing.assert_allclose(got.singular_values, ref[:20], rtol=1e-3)


def test_small_top_k_on_a_large_block_uses_a_top_k_method(large_block):
    ref = dense_singular_values(large_block)
    got = sparse_singular_values(large_block, top_k=10, device="cpu")  # 10 * 10 < 400 columns
    assert "lanczos" in got.method and got.accuracy["truncated_blocks"][0]["k"] == 10
    np.testing.assert_allclose(got.singular_values, ref[:10], rtol=1e-8)


def test_cpu_threads_drop_to_one_only_on_a_busy_machine(monkeypatch):
    import os

    import torch

    from lmsat.measure.sparse_spectrum import cpu_threads_for_load

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "getloadavg", lambda: (10.0 * (os.cpu_count() or 1), 0.0, 0.0))
    with cpu_threads_for_load("cpu") as used:
        assert used == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    with cpu_threads_for_load("cpu") as used:
        assert used == before and torch.get_num_threads() == before


@pytest.mark.parametrize("method", ["lanczos", "subspace"])
def test_gram_products_in_column_chunks_give_the_same_values(method, monkeypatch):
    import lmsat.measure.sparse_spectrum as ss

    p = ngram_like(3000, 300, seed=9)
    ref = sparse_singular_values(p, top_k=12, method=method, device="cpu").singular_values
    _, multi = split_gram(p)
    monkeypatch.setattr(ss, "_PRODUCT_BYTES", 8 * multi.shape[0] * 5)  # 5 columns per product
    assert ss._columns_per_product(multi.shape[0]) == 5
    got = sparse_singular_values(p, top_k=12, method=method, device="cpu").singular_values
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    np.testing.assert_allclose(got, dense_singular_values(p)[:12], rtol=1e-3)
