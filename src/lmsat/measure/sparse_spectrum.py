"""Singular values of a large sparse matrix P (the n-gram next-token matrix), exactly where possible.

The singular values of P (C x V) are s_i = sqrt(lambda_i(P^T P)), the square
roots of the eigenvalues of the V x V Gram matrix; |P|_F^2 = sum_ij P_ij^2 =
sum_i s_i^2 is computed exactly from the non-zeros, so W-error(d) =
sqrt(|P|_F^2 - sum_{i<=d} s_i^2) / |P|_F is exact for every d up to the number
of singular values computed, even when only the top ones are.

Exact reduction by blocks. Rows and columns of P that share no non-zero fall in
different connected components of the bipartite graph (row c -- column w when
P[c, w] != 0); after permuting rows and columns, P is block diagonal and its
singular values are the union of the blocks' singular values. For n-gram
matrices most columns are only ever the continuation of contexts seen with a
single next token, so most blocks have one column (or one row), whose single
singular value is the block's Frobenius norm. What remains is usually one giant
block and many tiny ones:

* blocks whose smaller side is 1: s = |block|_F (vectorised, exact);
* small blocks (smaller side <= ``SMALL_BLOCK``): Gram matrices padded and
  stacked, one batched ``eigvalsh`` per size class (float64);
* large blocks: the Gram matrix of the smaller side, dense, ``eigvalsh`` in
  float64 (on the GPU when there is one) when it has at most ``max_dense`` rows
  (default: 20,000 on CPU, 3.2 GB; on a GPU the largest that fits in its free memory);
  otherwise the top k eigenvalues by randomized subspace iteration (torch, CPU or
  GPU) or Lanczos (``scipy.sparse.linalg.eigsh``), using the Gram operator
  without ever forming it.

Within a block, rows with a single non-zero (contexts always followed by the
same token) only add to the diagonal of the Gram matrix: P^T P = diag(d) + M^T M
with M the rows holding 2+ non-zeros (:func:`split_gram`), so Gram products cost
nnz(M), usually a small part of nnz(P).

Accuracy is measured on the run: for dense blocks, the trace check
|sum s_i^2 - |P|_F^2| / |P|_F^2 and the most negative eigenvalue (rounding);
for truncated blocks, the residual norms r_i = |G v_i - theta_i v_i| of the Ritz
pairs (each theta_i is within r_i of an eigenvalue of G, so W-error(d)^2 is
within sum_{i<=d} r_i / |P|_F^2 of its computed value). Through a Gram matrix
the eigenvalues s_i^2 carry an absolute rounding of about size * eps * s_1^2, so
a singular value far below s_1 is known to about eps * s_1^2 / s_i absolutely;
W-error, a sum of s_i^2, is unaffected.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

Method = Literal["auto", "dense", "subspace", "lanczos"]
METHODS: tuple[str, ...] = ("auto", "dense", "subspace", "lanczos")
SMALL_BLOCK = 128
DEFAULT_MAX_DENSE = 20_000
_GPU_MAX_DENSE = 65_536
DEFAULT_TRUNCATED_K = 1024
# Past the dense limit (full curve requested): the top TAIL_TOP eigenvalues exactly, the rest by
# stochastic Lanczos quadrature on the deflated Gram operator (docs/ngram.md, "Past the dense limit").
TAIL_TOP = 512
TAIL_PROBES = 16
TAIL_STEPS = 200
TAIL_SIGMAS = 3.0  # the interval adds this many standard errors of the probe average
_EPS_FACTOR = 10.0
_STACK_BYTES = 256 << 20  # memory of one batch of small Gram matrices
_PRODUCT_BYTES = 256 << 20  # memory of one M @ X intermediate in Gram products


@dataclass
class SparseSpectrum:
    """Top singular values of P (descending) with the exact |P|_F and how they were obtained.

    ``singular_values`` are exact (to the reported accuracy) top values: every
    singular value of P larger than the last one listed is listed. ``complete``
    is True when they are all the non-zero singular values of P (W-error then
    reaches 0 at d = rank P).
    """

    singular_values: np.ndarray
    frobenius_norm: float
    method: str
    complete: bool
    accuracy: dict[str, Any] = field(default_factory=dict)
    blocks: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    rank_bound: int | None = None  # sum over blocks of min(rows, columns) >= rank P
    # Past the dense limit: the tail's stochastic Lanczos quadrature (see :class:`TailQuadrature`), else None.
    tail: TailQuadrature | None = None


def dimension_bounds(
    singular_values: np.ndarray, frobenius_norm: float, rank_bound: int, threshold: float,
    head_error: np.ndarray | float = 0.0,
) -> tuple[int, int]:
    """[lo, hi] holding d(t) = min{d : W-error(d) <= t} when only the top k singular values are known.

    With F = |P|_F^2 (exact), the k computed values s_1 >= ... >= s_k (every singular value above
    s_k is among them) and T = F - sum_{i<=k} s_i^2 = sum_{i>k} s_i^2 (exact tail energy): for
    d <= k, W-error(d) is exact, so d(t) is exact when reached there. Beyond k the m = r - k
    unknown values (r = ``rank_bound`` >= rank P) each lie in [0, s_k^2] and sum to T, so

    * sum_{i>d} s_i^2 >= T - (d - k) s_k^2        =>  d(t) >= k + ceil((T - t^2 F) / s_k^2);
    * sum_{i>d} s_i^2 <= T (r - d) / (r - k)      =>  d(t) <= k + ceil(m (1 - t^2 F / T))

    (the smallest r - d of m values sum to at most their share of T; equality when the tail is flat).

    ``head_error``: a bound e_d on |sum_{i<=d} s_i^2 - computed| (a number, or an array over d = 0..k),
    e.g. float32 dense blocks (each eigenvalue within :func:`float32_eigenvalue_bound`, so e_d =
    min(d, b) * bound) and Ritz residuals: d(t) is then the first d whose tail T_d - e_d (lo) or
    T_d + e_d (hi) reaches t^2 F; the beyond-k bounds widen by e_k.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    total = float(frobenius_norm) ** 2
    head = np.concatenate([[0.0], np.cumsum(s * s)])
    tail = np.maximum(total - head, 0.0)
    err = np.broadcast_to(np.asarray(head_error, dtype=np.float64), tail.shape) if np.ndim(head_error) == 0 else \
        np.asarray(head_error, dtype=np.float64)[: len(tail)]
    target = threshold * threshold * total
    k = len(s)
    t_k = float(tail[-1])
    m = max(int(rank_bound) - k, 1)
    last = float(s[-1] ** 2) if k else t_k
    e_k = float(err[-1])

    def beyond_lo() -> int:
        return k + max(1, math.ceil((t_k - e_k - target) / max(last, 1e-300)))

    def beyond_hi() -> int:
        return k + max(1, math.ceil(m * (1.0 - target / max(t_k + e_k, 1e-300))))

    lo_hits = np.nonzero(tail - err <= target * (1 + 1e-12))[0]
    hi_hits = np.nonzero(tail + err <= target * (1 + 1e-12))[0]
    lo = int(lo_hits[0]) if len(lo_hits) else min(beyond_lo(), k + m)
    hi = int(hi_hits[0]) if len(hi_hits) else min(beyond_hi(), k + m)
    return lo, max(hi, lo)


def frobenius_norm(matrix: sp.spmatrix | np.ndarray) -> float:
    """|P|_F = sqrt(sum_ij P_ij^2), from the stored non-zeros in float64 (exact up to rounding)."""
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    data = np.asarray(data, dtype=np.float64)
    return float(math.sqrt(float(np.sum(data * data))))


def bipartite_blocks(matrix: sp.csr_matrix) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected components of the row--column graph of P's non-zeros.

    Returns (number of blocks, block of each row (C,), block of each column (V,)).
    A column with no non-zero forms a block of its own.
    """
    matrix = matrix.tocsr()
    n_rows, n_cols = matrix.shape
    size = n_rows + n_cols
    index_dtype = np.int32 if size < 2**31 else np.int64
    # Row c of the graph links to node n_rows + w for each non-zero P[c, w]; column nodes have no own links
    # (the graph is taken as undirected), so P's own index arrays serve without a COO copy.
    indptr = np.concatenate([matrix.indptr, np.full(n_cols, matrix.indptr[-1])]).astype(index_dtype)
    indices = (matrix.indices + n_rows).astype(index_dtype)
    adjacency = sp.csr_matrix((np.ones(matrix.nnz, dtype=np.int8), indices, indptr), shape=(size, size))
    n_blocks, labels = connected_components(adjacency, directed=False)
    return int(n_blocks), labels[:n_rows], labels[n_rows:]


@contextmanager
def cpu_threads_for_load(device: str) -> Iterator[int]:
    """Run torch's CPU linear algebra on one thread while the machine is already busy.

    When the 1-minute load average reaches the number of cores, OpenMP threads
    that wait for busy cores make LAPACK several times slower than one thread
    (measured on a 2-core machine at load 9: ``eigvalsh`` of a 1,500 x 1,500 matrix,
    0.6 s on one thread, 7 s on two). Yields the number of threads used.
    """
    import torch

    before = torch.get_num_threads()
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= (os.cpu_count() or 1)
    use = 1 if device == "cpu" and busy else before
    limits = None
    if use == 1 and busy:
        # numpy/scipy's BLAS too (scipy's Lanczos), when threadpoolctl is installed. Taken before
        # torch's setting and undone before it: threadpoolctl also drives the OpenMP pool torch
        # uses, and restoring its limits last would leave torch on one thread.
        try:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=1)
        except ImportError:
            pass
    torch.set_num_threads(use)
    try:
        yield use
    finally:
        if limits is not None:
            limits.restore_original_limits()
        torch.set_num_threads(before)


def default_max_dense(device: str) -> int:
    """Largest Gram block diagonalised densely: 20,000 on CPU; on CUDA, b with 3 * 8 * b^2 bytes <= free memory."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(min(_GPU_MAX_DENSE, math.sqrt(free / (3 * 8))))
    return DEFAULT_MAX_DENSE


def _resolve_device(device: str) -> str:
    from lmsat.device import resolve_device  # the one device resolver

    return resolve_device(device)


def dense_gram_eigenvalues(gram: np.ndarray, device: str = "cpu") -> np.ndarray:
    """All eigenvalues of a symmetric PSD matrix (or a stack of them), float64 ``eigvalsh``, descending.

    Values below the rounding level size * eps * lambda_max of their matrix are
    indistinguishable from 0 and returned as exactly 0 (negative rounding too).
    """
    import torch

    g = torch.as_tensor(gram, dtype=torch.float64, device=device)
    ev = torch.linalg.eigvalsh(g).flip(-1)
    floor = ev[..., :1].clamp_min(0) * (g.shape[-1] * _EPS_FACTOR * torch.finfo(torch.float64).eps)
    ev = torch.where(ev > floor, ev, torch.zeros_like(ev))
    return ev.cpu().numpy()


def _small_blocks_eigenvalues(matrix: sp.csr_matrix, col_block: np.ndarray, blocks: np.ndarray, device: str) -> np.ndarray:
    """Eigenvalues of P_b^T P_b for every block b in ``blocks`` (all of them small), batched by size.

    Each block's Gram matrix is scattered into a zero-padded (m x m) slot of a
    stacked array, m the next power of two of its size; padding adds only zero
    eigenvalues, which are dropped.
    """
    if len(blocks) == 0:
        return np.zeros(0)
    in_set = np.zeros(col_block.max() + 1, dtype=bool)
    in_set[blocks] = True
    cols = np.nonzero(in_set[col_block])[0]
    sub = matrix[:, cols]
    sub = sub[np.diff(sub.indptr) > 0]
    gram = (sub.T @ sub).tocoo()
    blk = col_block[cols]
    # Local index of each column inside its block.
    order = np.argsort(blk, kind="stable")
    sizes = np.bincount(blk, minlength=col_block.max() + 1)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    local = np.empty(len(cols), dtype=np.int64)
    local[order] = np.arange(len(cols)) - starts[blk[order]]
    out = []
    padded = 1 << np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64)
    for m in np.unique(padded[blocks]):
        members = blocks[padded[blocks] == m]
        per_chunk = max(1, _STACK_BYTES // (8 * int(m) * int(m)))
        for start in range(0, len(members), per_chunk):
            chunk = members[start : start + per_chunk]
            slot = np.full(len(sizes), -1, dtype=np.int64)
            slot[chunk] = np.arange(len(chunk))
            gi = blk[gram.row]
            keep = slot[gi] >= 0
            stack = np.zeros((len(chunk), int(m), int(m)))
            stack[slot[gi[keep]], local[gram.row[keep]], local[gram.col[keep]]] = gram.data[keep]
            out.append(dense_gram_eigenvalues(stack, device).ravel())
    ev = np.concatenate(out)
    return ev[ev > 0]


def _dense_block(gram: np.ndarray, device: str, single: bool = False) -> tuple[np.ndarray, float]:
    """Eigenvalues of one dense Gram block and its most negative raw eigenvalue / lambda_max (a rounding check).

    ``single``: diagonalise in float32 (half the memory: a 50k block is 10 GB), for blocks too
    large for float64 on a GPU. A backward-stable symmetric eigensolver returns eigenvalues within
    c * b * eps * lambda_max of the exact ones (b the block size). In float64 values under that
    level are rounding noise and set to 0; in float32 the level is percents of lambda_max (2.4% for
    a 20k block), so values are kept (only negatives are clipped) to keep the block's energy, and
    the caller records the bound (:func:`float32_eigenvalue_bound`).
    """
    import torch

    dtype = torch.float32 if single else torch.float64
    g = torch.as_tensor(gram, dtype=dtype, device=device)
    raw = torch.linalg.eigvalsh(g).flip(-1).to(torch.float64)
    del g
    top = float(raw[0].clamp_min(1e-300))
    lowest = min(0.0, float(raw[-1]) / top)
    floor = 0.0 if single else top * gram.shape[-1] * _EPS_FACTOR * torch.finfo(dtype).eps
    ev = torch.where(raw > floor, raw, torch.zeros_like(raw))
    return ev.cpu().numpy(), lowest


def float32_eigenvalue_bound(size: int, lambda_max: float) -> float:
    """Stated absolute error of each float32 Gram eigenvalue: 10 * b * eps_32 * lambda_max (b = block size)."""
    return _EPS_FACTOR * size * float(np.finfo(np.float32).eps) * lambda_max


def gpu_max_dense_single(device: str) -> int:
    """Largest block whose float32 Gram (3 * 4 * b^2 bytes with eigvalsh workspace) fits in the GPU's free memory."""
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(min(2 * _GPU_MAX_DENSE, math.sqrt(free / (3 * 4))))


def split_gram(matrix: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix]:
    """G = P^T P = diag(d) + M^T M, with M the rows of P holding 2+ non-zeros.

    A row with one non-zero (a context always followed by the same token, most
    rows of an n-gram matrix) only adds its squared value to one diagonal entry
    of G, so it is folded into d; products with G then cost nnz(M), not nnz(P).
    """
    matrix = matrix.tocsr()
    lengths = np.diff(matrix.indptr)
    single = np.repeat(lengths == 1, lengths)
    diag = np.bincount(matrix.indices[single], weights=matrix.data[single] ** 2, minlength=matrix.shape[1])
    multi = matrix[lengths > 1].tocsr()
    return diag, multi


def gram_dense(matrix: sp.csr_matrix) -> np.ndarray:
    """The dense Gram matrix P^T P (float64), built from :func:`split_gram`."""
    diag, multi = split_gram(matrix)
    gram = (multi.T @ multi).toarray()
    gram[np.diag_indices_from(gram)] += diag
    return gram


def _columns_per_product(n_rows: int) -> int:
    """Columns multiplied at once so that an (n_rows x columns) float64 intermediate stays under ``_PRODUCT_BYTES``."""
    return max(1, _PRODUCT_BYTES // (8 * max(n_rows, 1)))


def _torch_csr(matrix: sp.csr_matrix, device: str) -> Any:
    import torch

    m = matrix.tocsr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.as_tensor(m.indptr, dtype=torch.int64),
            torch.as_tensor(m.indices, dtype=torch.int64),
            torch.as_tensor(m.data, dtype=torch.float64),
            size=m.shape,
        ).to(device)


def subspace_top_eigenvalues(
    matrix: sp.csr_matrix, k: int, device: str = "cpu", max_iters: int = 40, tol: float = 1e-7, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Top-k eigenvalues of G = P^T P by randomized subspace iteration with Rayleigh-Ritz (torch).

    Block of l = k + max(16, k/4) vectors; each iteration Z = G Q (two sparse
    products with M and a diagonal, see :func:`split_gram`), Ritz values theta from Q^T Z, residuals r_i = |Z u_i - theta_i Q u_i|
    (free, since G Q u = Z u), then Q = qr(Z). Stops when max_{i<=k} r_i / theta_1 < tol
    or after ``max_iters``. Returns (theta_1..theta_k descending, accuracy dict).
    """
    import torch

    n = matrix.shape[1]
    k = min(k, n)
    ell = min(n, k + max(16, k // 4))
    diag_np, multi = split_gram(matrix)
    diag = torch.as_tensor(diag_np, dtype=torch.float64, device=device)[:, None]
    a = _torch_csr(multi, device)
    at = _torch_csr(multi.T.tocsr(), device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, ell, generator=gen, dtype=torch.float64).to(device))
    theta = residual = None
    it = 0
    step = _columns_per_product(multi.shape[0])

    def gram_times(x: Any) -> Any:
        # Column chunks bound the (rows of M) x chunk intermediate.
        return torch.cat([diag * x[:, j : j + step] + at @ (a @ x[:, j : j + step]) for j in range(0, x.shape[1], step)], dim=1)

    for it in range(1, max_iters + 1):
        z = gram_times(q)
        t = q.T @ z
        theta_all, u = torch.linalg.eigh((t + t.T) / 2)
        theta_all, u = theta_all.flip(0), u.flip(1)
        r = torch.linalg.vector_norm(z @ u - (q @ u) * theta_all, dim=0)
        theta, residual = theta_all[:k], r[:k]
        if float(residual.max() / theta[0].clamp_min(1e-300)) < tol:
            break
        q, _ = torch.linalg.qr(z)
    assert theta is not None and residual is not None
    theta_np = theta.clamp_min(0).cpu().numpy()
    res_np = residual.cpu().numpy()
    return theta_np, {
        "iterations": it,
        "gram_products": it * ell,
        "block_size": ell,
        "max_residual_relative": float(res_np.max() / max(theta_np[0], 1e-300)),
        "residual_sum": float(res_np.sum()),
        "converged": bool(res_np.max() / max(theta_np[0], 1e-300) < tol),
    }


def lanczos_top_eigenvalues(matrix: sp.csr_matrix, k: int, tol: float = 1e-10, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Top-k eigenvalues of G = P^T P by implicitly restarted Lanczos (ARPACK ``eigsh``), G x = d x + M^T (M x).

    Residuals |G v_i - theta_i v_i| are recomputed from the returned vectors.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = matrix.shape[1]
    k = min(k, n - 1)
    diag, multi = split_gram(matrix)
    mt = multi.T.tocsr()

    products = 0

    step = _columns_per_product(multi.shape[0])

    def gram_times(x: np.ndarray) -> np.ndarray:
        nonlocal products
        if x.ndim == 1:
            products += 1
            return diag * x + mt @ (multi @ x)
        products += x.shape[1]
        # Column chunks bound the (rows of M) x chunk intermediate.
        return np.concatenate([diag[:, None] * x[:, j : j + step] + mt @ (multi @ x[:, j : j + step]) for j in range(0, x.shape[1], step)], axis=1)

    op = LinearOperator((n, n), matvec=gram_times, matmat=gram_times, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    theta, vec = eigsh(op, k=k, which="LA", tol=tol, v0=v0)
    order = np.argsort(theta)[::-1]
    theta, vec = theta[order], vec[:, order]
    n_products = products
    res = np.linalg.norm(gram_times(vec) - vec * theta, axis=0)
    theta = np.clip(theta, 0, None)
    return theta, {
        "gram_products": n_products,
        "max_residual_relative": float(res.max() / max(theta[0], 1e-300)),
        "residual_sum": float(res.sum()),
        "converged": True,
    }


def top_eigenpairs(gram: Any, n: int, k: int, tol: float = 1e-10, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k eigenpairs (theta descending, V n x k orthonormal, residuals |G v_i - theta_i v_i|) of a
    symmetric PSD operator ``gram`` (a function X -> G X on n x j arrays) by ARPACK Lanczos."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = LinearOperator((n, n), matvec=gram, matmat=gram, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    theta, vec = eigsh(op, k=k, which="LA", tol=tol, v0=v0)
    order = np.argsort(theta)[::-1]
    theta, vec = theta[order], np.ascontiguousarray(vec[:, order])
    res = np.linalg.norm(gram(vec) - vec * theta, axis=0)
    return np.clip(theta, 0, None), vec, res


def gram_operator(matrix: sp.csr_matrix) -> Any:
    """X -> P^T P X through :func:`split_gram` (diag(d) X + M^T (M X)), column chunks bounding the M X intermediate."""
    diag, multi = split_gram(matrix)
    mt = multi.T.tocsr()
    step = _columns_per_product(multi.shape[0])

    def gram_times(x: np.ndarray) -> np.ndarray:
        if x.ndim == 1:
            return diag * x + mt @ (multi @ x)
        return np.concatenate([diag[:, None] * x[:, j : j + step] + mt @ (multi @ x[:, j : j + step])
                               for j in range(0, x.shape[1], step)], axis=1)

    return gram_times


def lanczos_quadrature(
    gram: Any, n: int, vectors: np.ndarray | None, probes: int = TAIL_PROBES, steps: int = TAIL_STEPS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss quadrature of the spectral measure of A = (I - V V^T) G (I - V V^T) seen from random probes.

    For each of ``probes`` Gaussian vectors z, q = (I - V V^T) z / |.|; ``steps`` Lanczos steps on A from q
    (all probes side by side, one G X product per step; no reorthogonalisation, as usual for stochastic
    Lanczos quadrature) give a tridiagonal T = Y diag(theta) Y^T; the nodes theta_j and weights
    w_j = Y_1j^2 (summing to 1) satisfy sum_j w_j f(theta_j) ~ q^T f(A) q, exact for polynomials of degree
    < 2 steps. For a Gaussian z, q is uniform on the unit sphere of the complement of V, so
    E[q^T f(A) q] = (1 / (n - k)) sum_{i > k} f(lambda_i): the probes estimate the normalised spectral
    distribution of the tail (Ubaru, Chen, Saad 2017). Returns (nodes (p x s), weights (p x s),
    Rayleigh quotients q^T A q (p,)); a probe whose Krylov space closes early has zero-weight padding.
    """
    k = 0 if vectors is None else vectors.shape[1]
    dim = n - k
    steps = max(1, min(steps, dim))
    rng = np.random.default_rng(seed + 7919)

    def project(x: np.ndarray) -> np.ndarray:
        return x if vectors is None else x - vectors @ (vectors.T @ x)

    q = project(rng.standard_normal((n, probes)))
    q /= np.linalg.norm(q, axis=0)
    q_prev = np.zeros_like(q)
    beta_prev = np.zeros(probes)
    alphas = np.zeros((steps, probes))
    betas = np.zeros((steps, probes))
    alive = np.ones(probes, dtype=bool)
    length = np.full(probes, steps)
    for j in range(steps):
        w = project(gram(project(q)))
        alpha = np.einsum("ij,ij->j", q, w)
        w -= q * alpha + q_prev * beta_prev
        beta = np.linalg.norm(w, axis=0)
        alphas[j] = np.where(alive, alpha, 0.0)
        done = alive & (beta <= 1e-12 * np.maximum(np.abs(alphas[: j + 1]).max(axis=0), 1e-300))
        length[done] = j + 1
        alive &= ~done
        betas[j] = np.where(alive, beta, 0.0)
        if not alive.any():
            break
        q_prev, q = q, w / np.where(beta > 0, beta, 1.0)
        beta_prev = beta
    nodes = np.zeros((probes, steps))
    weights = np.zeros((probes, steps))
    for p_i in range(probes):
        ell = int(length[p_i])
        t = np.diag(alphas[:ell, p_i]) + np.diag(betas[: ell - 1, p_i], 1) + np.diag(betas[: ell - 1, p_i], -1)
        theta, y = np.linalg.eigh(t)
        nodes[p_i, :ell] = np.clip(theta, 0.0, None)
        weights[p_i, :ell] = y[0] ** 2
    weights /= weights.sum(axis=1, keepdims=True)
    rayleigh = alphas[0]
    return nodes, weights, rayleigh


@dataclass
class TailQuadrature:
    """The unknown part of the spectrum past the dense limit, as stochastic Lanczos quadrature.

    ``known``: every eigenvalue of P^T P computed exactly (all blocks' values, the truncated blocks'
    top values included), descending. ``blocks``: one entry per truncated block: ``nodes`` / ``weights``
    (probes x steps, from :func:`lanczos_quadrature` on its deflated Gram operator), ``size`` = b - k
    (the number of unknown eigenvalues), ``energy`` = T_b = |P_b|_F^2 - sum of its k top values (exact).
    """

    known: np.ndarray
    blocks: list[dict[str, Any]]
    total: float  # |P|_F^2
    probes: int
    steps: int
    interpolate: bool = False  # F through the middle of each jump (measured: d(0.5) 2-6% low) instead of Gauss's steps

    def curve(self, sigmas: float = TAIL_SIGMAS) -> dict[str, np.ndarray]:
        """The estimated head (count, energy) at each level tau of a grid, with brackets.

        For one block and one probe, F(x) = sum_{theta_j <= x} w_j approximates the normalised
        distribution of the tail's eigenvalues; by the Chebyshev-Markov-Stieltjes inequalities the
        exact (probe) distribution lies between L(x) = sum_{j < i} w_j and U(x) = sum_{j <= i+1} w_j,
        theta_i <= x < theta_{i+1}. The estimate is F itself, Gauss's step function (standard SLQ;
        interpolating through the jumps' middles measured worse). Count above tau: N(tau) = (b - k) (1 - F(tau)); energy above tau, by parts,
        E(tau) = tau (1 - F(tau)) + int_tau^inf (1 - F), scaled so that E(0) equals the exact T_b
        (ratio to the probes' mean Rayleigh quotient). Brackets: L and U in place of F, then
        ``sigmas`` standard errors of the probe mean. Returns arrays over the grid: ``tau``,
        ``count`` / ``count_lo`` / ``count_hi`` (eigenvalues > tau, all blocks, known ones included)
        and ``energy`` / ``energy_lo`` / ``energy_hi`` (their sum).
        """
        known = np.sort(np.asarray(self.known, dtype=np.float64))  # ascending
        all_nodes = np.concatenate([b["nodes"][b["weights"] > 0] for b in self.blocks] + [[0.0]])
        top = max(float(all_nodes.max()), float(known[-1]) if len(known) else 0.0) * (1 + 1e-9) + 1e-300
        tau = np.unique(np.concatenate([all_nodes, [top]]))
        if len(tau) > 20_000:
            tau = np.unique(np.quantile(tau, np.linspace(0, 1, 20_000)))
        suffix = np.concatenate([np.cumsum(known[::-1])[::-1], [0.0]])
        above = len(known) - np.searchsorted(known, tau, side="right")
        known_count = above.astype(np.float64)
        known_energy = suffix[len(known) - above]
        out = {k: np.zeros(len(tau)) for k in ("count", "count_lo", "count_hi", "energy", "energy_lo", "energy_hi")}
        width = np.diff(tau)
        for blk in self.blocks:
            nodes, weights, size, energy = blk["nodes"], blk["weights"], float(blk["size"]), float(blk["energy"])
            per = {k: [] for k in ("F", "L", "U")}
            for th, w in zip(nodes, weights):
                keep = w > 0
                th, w = th[keep], w[keep]
                order = np.argsort(th)
                th, w = th[order], w[order]
                cum0 = np.concatenate([[0.0], np.cumsum(w)])
                i = np.searchsorted(th, tau, side="right")  # nodes <= tau
                if self.interpolate:
                    per["F"].append(np.interp(tau, np.concatenate([[0.0], th, [top]]), np.concatenate([[0.0], cum0[1:] - w / 2, [1.0]])))
                else:
                    per["F"].append(cum0[i])
                per["L"].append(cum0[np.maximum(i - 1, 0)])
                per["U"].append(cum0[np.minimum(i + 1, len(w))])
            f, lo_f, hi_f = (np.array(per[k]) for k in ("F", "U", "L"))  # U gives fewer above, L more

            def above_energy(f: np.ndarray) -> np.ndarray:
                # E(tau) = tau (1 - F(tau)) + int_tau^top (1 - F), trapezoid on the grid (exact for the
                # piecewise-linear estimate; for the steps L, U the nodes are grid points)
                g = 1.0 - f
                seg = np.concatenate([(g[:, 1:] + g[:, :-1]) / 2 * width, np.zeros((g.shape[0], 1))], axis=1)
                return tau * g + np.cumsum(seg[:, ::-1], axis=1)[:, ::-1]

            def below_energy(f: np.ndarray) -> np.ndarray:
                # R(tau) = int_[0, tau] x dF = tau F(tau) - int_0^tau F
                seg = np.concatenate([np.zeros((f.shape[0], 1)), (f[:, 1:] + f[:, :-1]) / 2 * width], axis=1)
                return tau * f - np.cumsum(seg, axis=1)

            m = f.shape[0]
            se = (lambda x: x.std(axis=0, ddof=1) / math.sqrt(m)) if m > 1 else (lambda x: np.zeros(x.shape[1]))
            out["count"] += size * (1 - f.mean(axis=0))
            out["count_lo"] += size * (1 - lo_f.mean(axis=0)) - sigmas * size * se(f)
            out["count_hi"] += size * (1 - hi_f.mean(axis=0)) + sigmas * size * se(f)
            e_mid = above_energy(f)
            rq = e_mid[:, 0]  # each probe's energy of the whole tail (its Rayleigh quotient, up to the interpolation)
            scale = energy / max(float(rq.mean()), 1e-300)  # E(0) = T_b, exact
            ratio = e_mid.mean(axis=0) / max(float(rq.mean()), 1e-300)
            e_se = scale * se(e_mid - ratio[None, :] * rq[:, None])  # delta method for a ratio of means
            out["energy"] += scale * e_mid.mean(axis=0)
            # brackets two ways, both valid, intersected: from above (integrating the CMS bracket down from
            # the top) and from below (T_b minus the bracket of the energy under tau, integrated up from 0)
            lo_above, hi_above = scale * above_energy(lo_f).mean(axis=0), scale * above_energy(hi_f).mean(axis=0)
            def integral(f: np.ndarray) -> np.ndarray:  # int_0^tau of a step function constant between grid points
                return np.cumsum(np.concatenate([np.zeros((m, 1)), f[:, :-1] * width], axis=1), axis=1)

            # R(tau) <= tau U(tau) - int_0^tau L and >= tau L(tau) - int_0^tau U; E = T_b - R
            lo_below = energy - scale * (tau * lo_f - integral(hi_f)).mean(axis=0)
            hi_below = energy - scale * (tau * hi_f - integral(lo_f)).mean(axis=0)
            out["energy_lo"] += np.maximum(lo_above, lo_below) - sigmas * e_se
            out["energy_hi"] += np.minimum(hi_above, hi_below) + sigmas * e_se
        for k in ("count", "count_lo", "count_hi"):
            out[k] = np.maximum(out[k], 0.0) + known_count
        for k in ("energy", "energy_lo", "energy_hi"):
            out[k] = np.clip(out[k], 0.0, None) + known_energy
        # every count and energy is non-increasing in tau
        for k in out:
            out[k] = np.minimum.accumulate(out[k])
        out["tau"] = tau
        return out

    def dimension(self, threshold: float, sigmas: float = TAIL_SIGMAS) -> tuple[int, int, int]:
        """(estimate, lo, hi) of d(t): the count above the level tau* whose head energy reaches (1 - t^2) |P|_F^2."""
        c = self.curve(sigmas)
        need = (1.0 - threshold * threshold) * self.total

        def count_at(energy: np.ndarray, count: np.ndarray) -> float:
            ok = np.nonzero(energy >= need)[0]  # energy falls with tau: the last tau still holding enough
            if not len(ok):
                return float(count[0])
            g = int(ok[-1])
            if g + 1 < len(energy) and energy[g] > energy[g + 1]:  # interpolate between grid levels
                frac = (energy[g] - need) / (energy[g] - energy[g + 1])
                return float(count[g] + frac * (count[g + 1] - count[g]))
            return float(count[g])

        est = count_at(c["energy"], c["count"])
        lo = count_at(c["energy_hi"], c["count_lo"])
        hi = count_at(c["energy_lo"], c["count_hi"])
        return int(round(est)), int(math.floor(min(lo, est))), int(math.ceil(max(hi, est)))

    def summary(self) -> dict[str, Any]:
        return {"method": "stochastic Lanczos quadrature on the deflated Gram operator", "probes": self.probes,
                "steps": self.steps, "sigmas": TAIL_SIGMAS,
                "blocks": [{"unknown_eigenvalues": int(b["size"]), "tail_energy": float(b["energy"]), "top_k": int(b["k"])}
                           for b in self.blocks]}


def spectrum_dimensions(spec: SparseSpectrum, thresholds: tuple[float, ...]) -> dict[float, dict[str, Any]]:
    """For each t: {"estimate", "lo", "hi", "how"} of d(t) = min{d : W-error(d) <= t}.

    ``how``: "exact" (the computed values reach t: lo = hi = d, widened only by the float32 / Ritz
    error bounds of :func:`head_error_bound`); "estimated" (past the computed values, by the tail's
    stochastic Lanczos quadrature, :meth:`TailQuadrature.dimension`, its interval intersected with the
    guaranteed :func:`dimension_bounds`); "bounds" (no tail estimate: the guaranteed bracket only, no estimate).
    """
    s = spec.singular_values
    rank_bound = spec.rank_bound or len(s)
    err = head_error_bound(spec)
    fro = spec.frobenius_norm
    head = np.concatenate([[0.0], np.cumsum(s * s)])
    out: dict[float, dict[str, Any]] = {}
    for t in thresholds:
        lo, hi = dimension_bounds(s, fro, rank_bound, t, head_error=err)
        hits = np.nonzero(fro * fro - head <= t * t * fro * fro * (1 + 1e-12))[0]
        if len(hits):
            out[t] = {"estimate": int(hits[0]), "lo": lo, "hi": hi, "how": "exact"}
        elif spec.tail is not None:
            est, t_lo, t_hi = spec.tail.dimension(t)
            lo2, hi2 = max(lo, t_lo), min(hi, t_hi)
            if lo2 > hi2:  # the estimate's interval left the guaranteed bracket: keep the guaranteed one
                lo2, hi2 = lo, hi
            out[t] = {"estimate": min(max(est, lo2), hi2), "lo": lo2, "hi": hi2, "how": "estimated"}
        else:
            out[t] = {"estimate": None, "lo": lo, "hi": hi, "how": "bounds"}
    return out


def head_error_bound(spec: SparseSpectrum) -> np.ndarray:
    """e_d >= |sum_{i<=d} s_i^2 - exact| for d = 0..k: float32 dense blocks contribute min(d, b) times their
    per-eigenvalue bound (:func:`float32_eigenvalue_bound`), truncated blocks the sum of their Ritz residuals."""
    d = np.arange(len(spec.singular_values) + 1, dtype=np.float64)
    err = np.zeros_like(d)
    for blk in spec.accuracy.get("float32_blocks", []):
        err += np.minimum(d, blk["size"]) * blk["eigenvalue_abs_bound"]
    for blk in spec.accuracy.get("truncated_blocks", []):
        err += blk.get("residual_sum", 0.0)
    return err


def block_submatrix(matrix: sp.csr_matrix, row_block: np.ndarray, col_block: np.ndarray, b: int) -> sp.csr_matrix:
    """Block ``b`` of P (labels from :func:`bipartite_blocks`), transposed if it has more columns than rows."""
    rows = np.nonzero(row_block == b)[0]
    in_block = col_block == b
    position = np.cumsum(in_block) - 1
    # Every non-zero of the block's rows lies in the block's columns: take the rows, renumber the columns.
    sub = matrix if len(rows) == matrix.shape[0] else matrix[rows]
    sub = sp.csr_matrix((sub.data, position[sub.indices].astype(sub.indices.dtype), sub.indptr), shape=(len(rows), int(in_block.sum())))
    # The Gram of the smaller side has the same non-zero eigenvalues.
    return sub if sub.shape[1] <= sub.shape[0] else sub.T.tocsr()


def sparse_singular_values(
    matrix: sp.csr_matrix,
    top_k: int | None = None,
    method: Method = "auto",
    device: str = "auto",
    max_dense: int | None = None,
    truncated_k: int = DEFAULT_TRUNCATED_K,
    seed: int = 0,
    tail_probes: int = TAIL_PROBES,
    tail_steps: int = TAIL_STEPS,
    tail_top: int = TAIL_TOP,
) -> SparseSpectrum:
    """Singular values of a sparse P, blockwise (see module docstring), with on-run accuracy.

    ``top_k``: keep only the k largest (None: all). ``method``:

    * ``auto``: the dense Gram of a block when its smaller side is at most
      ``max_dense`` (None: :func:`default_max_dense`) and ``top_k`` is not under
      a tenth of it; else a top-k method, Lanczos on CPU, subspace iteration on a GPU;
    * ``dense``: the dense Gram of every block, whatever its size;
    * ``subspace`` or ``lanczos``: that top-k method for every block whose
      smaller side exceeds ``SMALL_BLOCK``.

    Truncated blocks compute ``top_k`` (or ``truncated_k``) values. When the full curve is asked for
    (``top_k`` None) and ``tail_probes`` > 0, a block over the dense limit instead gets its top
    ``tail_top`` eigenpairs exactly (Lanczos, CPU) and the rest of its spectrum as stochastic Lanczos
    quadrature on the deflated Gram operator (``tail_probes`` probes, ``tail_steps`` steps):
    ``SparseSpectrum.tail``, from which :func:`spectrum_dimensions` estimates each dim with an interval.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    matrix.eliminate_zeros()
    device = _resolve_device(device)
    max_dense_single = 0  # float32 dense route: only on a GPU, only with the default --max-dense
    if max_dense is None:
        max_dense = default_max_dense(device)
        if device.startswith("cuda"):
            max_dense_single = gpu_max_dense_single(device)
    fro = frobenius_norm(matrix)
    if matrix.nnz == 0:
        raise ValueError("the matrix has no non-zero entry")
    n_blocks, row_block, col_block = bipartite_blocks(matrix)
    n_rows_b = np.bincount(row_block, minlength=n_blocks)
    n_cols_b = np.bincount(col_block, minlength=n_blocks)
    side = np.minimum(n_rows_b, n_cols_b)
    block_sq = np.bincount(col_block[matrix.indices], weights=matrix.data * matrix.data, minlength=n_blocks)

    with cpu_threads_for_load(device) as threads:
        values: list[np.ndarray] = []
        trivial = np.nonzero(side == 1)[0]
        values.append(block_sq[trivial])
        small = np.nonzero((side >= 2) & (side <= SMALL_BLOCK))[0]
        small_by_cols = small[n_cols_b[small] <= n_rows_b[small]]
        small_by_rows = small[n_cols_b[small] > n_rows_b[small]]
        values.append(_small_blocks_eigenvalues(matrix, col_block, small_by_cols, device))
        if len(small_by_rows):
            values.append(_small_blocks_eigenvalues(matrix.T.tocsr(), row_block, small_by_rows, device))

        large = np.nonzero(side > SMALL_BLOCK)[0]
        dense_done: list[int] = []
        truncated: list[dict[str, Any]] = []
        single_blocks: list[dict[str, Any]] = []
        tail_blocks: list[dict[str, Any]] = []
        cutoff = 0.0
        most_negative = 0.0
        for b in large[np.argsort(-side[large])]:
            sub = block_submatrix(matrix, row_block, col_block, int(b))
            size = sub.shape[1]
            # With a small --top-k, a top-k method beats diagonalising a large block in full.
            few = top_k is not None and top_k * 10 < size
            use_dense = method == "dense" or (method == "auto" and size <= max_dense and not few)
            single = method == "auto" and not few and max_dense < size <= max_dense_single
            if use_dense or single:
                gram = gram_dense(sub)
                ev, lowest = _dense_block(gram, device, single=single)
                if single:
                    bound = float32_eigenvalue_bound(size, float(ev[0]) if len(ev) else 0.0)
                    single_blocks.append({"size": size, "eigenvalue_abs_bound": bound, "w_error_squared_bound": size * bound / (fro * fro)})
                del gram
                most_negative = min(most_negative, lowest)
                values.append(ev)
                dense_done.append(size)
                continue
            with_tail = method == "auto" and top_k is None and tail_probes > 0 and not use_dense
            k = min(tail_top if with_tail else (top_k or truncated_k), size)
            if k >= size - 1:
                ev, lowest = _dense_block(gram_dense(sub), device)
                most_negative = min(most_negative, lowest)
                values.append(ev)
                dense_done.append(size)
                continue
            name = method if method in ("subspace", "lanczos") else ("subspace" if device.startswith("cuda") else "lanczos")
            if with_tail:  # top k exactly, the rest by stochastic Lanczos quadrature on the deflated operator
                gram = gram_operator(sub)
                ev, vec, res = top_eigenpairs(gram, size, k, seed=seed)
                nodes, weights, _ = lanczos_quadrature(gram, size, vec, probes=tail_probes, steps=tail_steps, seed=seed)
                del vec
                block_energy = float(np.sum(sub.data * sub.data))
                tail_blocks.append({"nodes": nodes, "weights": weights, "size": size - k, "k": k,
                                    "energy": max(block_energy - float(ev.sum()), 0.0)})
                values.append(ev)
                truncated.append({"size": size, "k": k, "method": "lanczos+slq", "max_residual_relative": float(res.max() / max(ev[0], 1e-300)),
                                  "residual_sum": float(res.sum()), "converged": True})
                cutoff = max(cutoff, float(ev[-1]))
                continue
            if name == "lanczos":
                ev, info = lanczos_top_eigenvalues(sub, k, seed=seed)
            else:
                ev, info = subspace_top_eigenvalues(sub, k, device=device, seed=seed, max_iters=200 if device.startswith("cuda") else 60)
            values.append(ev)
            truncated.append({"size": size, "k": k, "method": name, **info})
            cutoff = max(cutoff, float(ev[-1]))

        eig = np.concatenate(values)
        eig = np.sort(eig[eig > 0])[::-1]
        tail = TailQuadrature(known=eig.copy(), blocks=tail_blocks, total=fro * fro, probes=tail_probes, steps=tail_steps) if tail_blocks else None
        complete = not truncated
        if not complete:
            # Below the smallest value of a truncated block, other values of that block are unknown.
            eig = eig[eig >= cutoff]
        if top_k is not None and len(eig) > top_k:
            eig = eig[:top_k]
            complete = False
        s = np.sqrt(eig)

        accuracy: dict[str, Any] = {}
        if not truncated and top_k is None:
            accuracy["trace_relative_error"] = abs(float(np.sum(eig)) - fro * fro) / (fro * fro)
        accuracy["most_negative_eigenvalue_relative"] = most_negative
        if single_blocks:  # float32 dense blocks: each W-error(d)^2 within this of the exact value
            accuracy["float32_blocks"] = single_blocks
            accuracy["w_error_squared_bound_float32"] = sum(b["w_error_squared_bound"] for b in single_blocks)
        if truncated:
            accuracy["truncated_blocks"] = truncated
            accuracy["max_residual_relative"] = max(t["max_residual_relative"] for t in truncated)
            accuracy["w_error_squared_bound"] = sum(t["residual_sum"] for t in truncated) / (fro * fro)
        parts = []
        if len(trivial) or len(small):
            parts.append("blocks")
        if dense_done:
            parts.append("gram-dense")
        if truncated:
            parts.append(truncated[0]["method"])
        if tail is not None:
            accuracy["tail_estimate"] = tail.summary()
        return SparseSpectrum(
            singular_values=s,
            frobenius_norm=fro,
            method="+".join(parts) if parts else "blocks",
            complete=complete,
            accuracy=accuracy,
            blocks={
                "n_blocks": n_blocks,
                "trivial_blocks": int(len(trivial)),
                "small_blocks": int(len(small)),
                "large_blocks": [int(x) for x in sorted(side[large], reverse=True)],
                "dense_block_sizes": dense_done,
            },
            device=device if device != "cpu" else f"cpu ({threads} thread{'s' if threads > 1 else ''})",
            rank_bound=int(side.sum()),
            tail=tail,
        )
