"""``lmsat ngram-rank --ray``: the n-gram count as map and reduce tasks of an executor (lmsat.executor).

The counted stream is the same as in one process (lmsat.experiments.ngram): the
corpus's document pieces, in order, each tokenised with the end-of-text id after
a document's last piece, all concatenated. Here it is cut into shards of whole
pieces (about ``shard_chars`` characters each):

1. **map** (one task per shard): tokenise the shard and count its windows
   (:func:`lmsat.measure.ngram.count_ngrams`); split the table into ``n_buckets``
   buckets by the context's first token (contiguous id ranges), each bucket a
   separate object (kept in the object store, which spills to disk when memory is
   full); return the shard's first and last n-1 ids.
2. **boundaries** (driver): the windows that straddle two shards are counted from
   those ids: for shard k, the windows of (last n-1 ids of k) + (first n-1 ids after
   k) are exactly the windows that start in k and end after it.
3. **reduce** (one task per bucket): :func:`lmsat.measure.ngram.merge_counts` of
   that bucket's parts (and the boundary windows of its contexts).

Buckets are id ranges of the first context token, so the bucket tables stacked in
order are sorted exactly as the one-process table: the count table is identical
(arrays equal, element by element), and the spectrum that follows (on the driver,
as in one process) is the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmsat.errors import UserError
from lmsat.executor import ONE_CPU, Executor, Resources
from lmsat.measure.ngram import (
    NGramCounts,
    SamplingNoise,
    _empty_counts,
    concat_disjoint,
    count_ngrams,
    merge_counts,
)
from lmsat.measure.sparse_spectrum import SparseSpectrum
from lmsat.progress import track

DEFAULT_SHARD_CHARS = 64 << 20  # ~16M tokens of English BPE per map task


def bucket_bounds(vocab_size: int, n_buckets: int) -> np.ndarray:
    """(n_buckets + 1,) increasing first-token ids: bucket b holds contexts whose first id is in [bounds[b], bounds[b+1])."""
    n_buckets = max(1, min(n_buckets, vocab_size))
    return np.linspace(0, vocab_size, n_buckets + 1).round().astype(np.int64)


def split_by_first_token(counts: NGramCounts, bounds: np.ndarray) -> list[NGramCounts]:
    """The table's contexts cut at ``bounds`` of their first token (the table is sorted: each bucket is a slice)."""
    first = counts.contexts[:, 0] if counts.n_contexts else np.zeros(0, np.int64)
    cuts = np.searchsorted(first, bounds, side="left")
    parts = []
    for b in range(len(bounds) - 1):
        c0, c1 = int(cuts[b]), int(cuts[b + 1])
        k0, k1 = int(counts.indptr[c0]), int(counts.indptr[c1])
        parts.append(NGramCounts(
            counts.n, counts.vocab_size, counts.contexts[c0:c1].copy(), counts.indptr[c0 : c1 + 1] - k0,
            counts.next_token[k0:k1].copy(), counts.count[k0:k1].copy(), 0,
        ))
    return parts


def encode_pieces(tokenizer: Any, pieces: Sequence[tuple[str, bool]]) -> np.ndarray:
    """The ids of document pieces, end-of-text after each document's last piece (as ``token_stream`` makes them)."""
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    out: list[int] = []
    for ids, (_, end) in zip(tokenizer.encode_batch([p for p, _ in pieces]), pieces):
        out.extend(ids)
        if end:
            out.extend(eos)
    return np.asarray(out, dtype=np.int64)


def count_shard(shard: Any, n: int, vocab_size: int, bounds: np.ndarray, tokenizer: Any = None) -> tuple[Any, ...]:
    """Map task: (bucket tables ..., (head ids, tail ids, n_tokens, n_documents, max id)).

    ``shard`` is an id array, or document pieces [(text, ends_document)] with ``tokenizer``.
    """
    if tokenizer is not None:
        n_docs = sum(bool(end) for _, end in shard)
        ids = encode_pieces(tokenizer, shard)
    else:
        n_docs = 0
        ids = np.ascontiguousarray(shard, dtype=np.int64).ravel()
    top = int(ids.max()) if ids.size else -1
    if top >= vocab_size:  # reported by the driver, which names the tokenizer
        return (*[_empty_counts(n, vocab_size)] * (len(bounds) - 1), (ids[:0], ids[:0], int(ids.size), n_docs, top))
    counts = count_ngrams(ids, n, vocab_size)
    k = n - 1
    return (*split_by_first_token(counts, bounds), (ids[:k].copy(), ids[-k:].copy() if ids.size else ids[:0], int(ids.size), n_docs, top))


def boundary_counts(edges: Sequence[tuple[np.ndarray, np.ndarray, int]], n: int, vocab_size: int) -> NGramCounts:
    """Windows that start in one shard and end in a later one, from each shard's (first n-1 ids, last n-1 ids, length)."""
    k = n - 1
    parts = []
    for i, (_, tail, length) in enumerate(edges):
        if length == 0:
            continue
        after: list[np.ndarray] = []
        have = 0
        for head, _, _ in edges[i + 1 :]:
            if have >= k:
                break
            after.append(head[: k - have])
            have += min(len(head), k - have)
        if have:
            parts.append(count_ngrams(np.concatenate([tail[-min(k, length):], *after]), n, vocab_size))
    return merge_counts(parts) if parts else _empty_counts(n, vocab_size)


def reduce_bucket(*parts: NGramCounts) -> NGramCounts:
    """Reduce task: the merged table of one bucket."""
    return merge_counts(list(parts))


def text_shards(pieces: Iterator[tuple[str, bool]], shard_chars: int) -> Iterator[list[tuple[str, bool]]]:
    """Consecutive document pieces grouped into shards of about ``shard_chars`` characters."""
    shard: list[tuple[str, bool]] = []
    chars = 0
    for piece in pieces:
        shard.append(piece)
        chars += len(piece[0])
        if chars >= shard_chars:
            yield shard
            shard, chars = [], 0
    if shard:
        yield shard


def count_distributed(
    shards: Iterator[Any],
    n: int,
    vocab_size: int,
    executor: Executor,
    n_buckets: int | None = None,
    tokenizer: Any = None,
    resources: Resources = ONE_CPU,
) -> tuple[NGramCounts, int]:
    """(counts of the concatenated shards, documents): map per shard, boundary windows, reduce per bucket.

    ``shards``: id arrays, or lists of document pieces when ``tokenizer`` is given.
    Equal, array for array, to ``count_ngrams`` of the whole stream.
    """
    if n_buckets is None:
        n_buckets = max(2, 2 * int(getattr(executor, "cluster_cpus", lambda: 1)()))
    bounds = bucket_bounds(vocab_size, n_buckets)
    n_b = len(bounds) - 1
    shared_bounds = executor.share(bounds)
    shared_tok = executor.share(tokenizer) if tokenizer is not None else None
    args = [(executor.share(s), n, vocab_size, shared_bounds, shared_tok) for s in shards]
    if not args:
        return _empty_counts(n, vocab_size), 0
    results: list[Any] = [None] * len(args)
    for done in track(executor.map(count_shard, args, resources, remote_outputs=n_b, fresh_workers=False), "counting n-grams (Ray)", total=len(args), unit="shards"):
        if done.error is not None:
            raise RuntimeError(f"n-gram shard {done.index} failed: {done.error}")
        results[done.index] = done.value
    infos = [r[-1] for r in results]
    top = max(info[4] for info in infos)
    if top >= vocab_size:
        raise UserError(f"the tokenizer produced id {top} >= its vocabulary size {vocab_size}; the tokenizer files are inconsistent.")
    n_tokens = sum(info[2] for info in infos)
    n_docs = sum(info[3] for info in infos)
    edges = boundary_counts([(info[0], info[1], info[2]) for info in infos], n, vocab_size)
    edge_parts = split_by_first_token(edges, bounds)
    reduce_args = [tuple(r[b] for r in results) + (edge_parts[b],) for b in range(n_b)]
    buckets: list[NGramCounts | None] = [None] * n_b
    for done in track(executor.map(reduce_bucket, reduce_args, resources, fresh_workers=False), "merging n-gram buckets (Ray)", total=n_b, unit="buckets"):
        if done.error is not None:
            raise RuntimeError(f"n-gram bucket {done.index} failed: {done.error}")
        buckets[done.index] = done.value
    return concat_disjoint([b for b in buckets if b is not None], n, vocab_size, n_tokens), n_docs


def count_corpus_distributed(
    corpus: Any, tokenizer: Any, settings: Any, spill_dir: Any = None, *, executor: Executor, shard_chars: int = DEFAULT_SHARD_CHARS,
    resources: Resources = ONE_CPU,
) -> tuple[NGramCounts, int]:
    """The corpus's n-gram counts and documents, counted as tasks (the same table as ``count_corpus``).

    What :class:`RayNGram` counts with (``run_counts(..., counter=RayNGram(executor))``);
    ``spill_dir`` is unused (Ray's object store spills the shard tables to disk when memory is full).
    """
    from lmsat.loading.corpus import iter_document_pieces

    if settings.max_tokens is not None:
        raise UserError("--max-tokens cannot be combined with --ray (the shards are counted at once); cut the corpus instead, or drop --ray.")
    shard_chars = int(os.environ.get("LMSAT_RAY_SHARD_CHARS", shard_chars))
    pieces = iter_document_pieces(corpus, settings.documents)
    return count_distributed(text_shards(pieces, shard_chars), settings.n, tokenizer.vocab_size, executor, tokenizer=tokenizer, resources=resources)


@dataclass
class RayNGram:
    """``run_ngram``'s ``counter`` for ``--ray``: counts as map/reduce tasks, and (``p_spectrum``) P^T P from bucket tasks."""

    executor: Executor
    resources: Resources = ONE_CPU

    def __call__(self, corpus: Any, tokenizer: Any, settings: Any, spill_dir: Any = None) -> tuple[NGramCounts, int]:
        return count_corpus_distributed(corpus, tokenizer, settings, spill_dir, executor=self.executor, resources=self.resources)

    def p_spectrum(self, counts: NGramCounts, settings: Any, device: str) -> tuple[PSummary, SamplingNoise | None, SparseSpectrum | None]:
        return p_spectrum_distributed(counts, settings, device, self.executor, resources=self.resources)


@contextmanager
def ray_counter(use_ray: bool, address: str | None, settings: Any, cpus_per_task: float = 1.0) -> Iterator[Any]:
    """The ``counter`` for ``run_ngram``: None (one process) or :class:`RayNGram`, with its executor closed on exit."""
    if not use_ray:
        yield None
        return
    if settings.max_tokens is not None:
        raise UserError("--max-tokens cannot be combined with --ray (the shards are counted at once); cut the corpus instead, or drop --ray.")
    if cpus_per_task <= 0:
        raise UserError(f"--cpus-per-task must be positive (got {cpus_per_task}).")
    if settings.method not in ("auto", "dense", "lanczos"):
        raise UserError(f"--method {settings.method} is not available with --ray (the spectrum from P^T P): use auto, dense or lanczos.")
    from lmsat.executor import RayExecutor

    executor = RayExecutor(address)
    try:
        yield RayNGram(executor, Resources(cpus=cpus_per_task))
    finally:
        executor.close()


# --- P^T P accumulated from the buckets ---------------------------------------------------------


@dataclass
class GramPart:
    """One bucket's share of P (its kept contexts' rows) summarised as its share of G = P^T P (full vocabulary indices).

    Rows of P are the bucket's kept contexts, P[c, w] = N(c, w) / N(c) (uniform) or times
    sqrt(N(c) / N) (frequency; N = sum of N(c) over every kept context), exactly as
    :func:`lmsat.measure.ngram.next_token_matrix` builds them. Contexts are disjoint across
    buckets, so G = sum over buckets of P_b^T P_b = diag(sum d_b) + sum M_b^T M_b
    (:func:`lmsat.measure.sparse_spectrum.split_gram`: d_b from rows with one non-zero,
    M_b the rows with two or more).
    """

    diag: np.ndarray  # (V,) float64: sum of squares of one-non-zero rows, per column
    gram: sp.csr_matrix  # (V, V) M_b^T M_b
    rows_by_first_column: np.ndarray  # (V,) int64: rows counted at their first non-zero column (rows per block)
    frobenius_sq: float  # sum of P_b's squared entries
    n_rows: int
    n_ngrams: int  # non-zeros of P_b
    n_occurrences: int  # sum of N(c, w) over the kept rows
    noise: dict[str, float]  # partial sums of lmsat.measure.ngram.sampling_noise


def gram_part(part: NGramCounts, keep: np.ndarray, frequency_total: float | None) -> GramPart:
    """Task: the :class:`GramPart` of one bucket table, rows ``keep`` (indices into its contexts)."""
    from lmsat.measure.ngram import _select_contexts
    from lmsat.measure.sparse_spectrum import split_gram

    v = part.vocab_size
    kept = _select_contexts(part, keep) if len(keep) < part.n_contexts else part
    n_c = part.context_counts()[keep].astype(np.float64)
    row_scale = 1.0 / n_c if len(n_c) else n_c
    scale_sq = np.ones_like(n_c)
    if frequency_total is not None:
        row_scale = row_scale * np.sqrt(n_c / max(frequency_total, 1.0))
        scale_sq = n_c / max(frequency_total, 1.0)
    lengths = np.diff(kept.indptr)
    data = kept.count.astype(np.float64) * np.repeat(row_scale, lengths)
    p = sp.csr_matrix((data, kept.next_token.astype(np.int64), kept.indptr.copy()), shape=(len(keep), v))
    diag, multi = split_gram(p)
    gram = (multi.T @ multi).tocsr()
    first = np.bincount(p.indices[p.indptr[:-1][lengths > 0]], minlength=v).astype(np.int64)
    # the sums sampling_noise makes over rows (lmsat.measure.ngram.SamplingNoise)
    row_sq = np.asarray(p.multiply(p).sum(axis=1)).ravel()
    s = row_sq / np.where(scale_sq > 0, scale_sq, 1.0)
    many = n_c >= 2
    q = np.zeros_like(n_c)
    q[many] = np.clip((n_c[many] * s[many] - 1.0) / (n_c[many] - 1.0), 0.0, 1.0)
    twice = n_c == 2
    noise = {
        "noise_many": float((scale_sq[many] * (1.0 - q[many]) / n_c[many]).sum()),
        "q_twice": float(q[twice].sum()), "n_twice": float(twice.sum()),
        "q_many": float(q[many].sum()), "n_many": float(many.sum()),
        "once_scale": float(scale_sq[~many].sum()), "one_hot": float((lengths == 1).sum()),
    }
    return GramPart(diag=diag, gram=gram, rows_by_first_column=first, frobenius_sq=float(np.sum(data * data)), n_rows=len(keep),
                    n_ngrams=int(p.nnz), n_occurrences=int(kept.count.sum()), noise=noise)


@dataclass(frozen=True)
class PSummary:
    """What ``run_ngram`` reads of P when only P^T P reached the driver (the fields of NextTokenMatrix it uses)."""

    shape: tuple[int, int]
    nnz: int
    n_ngrams_kept: int
    n_occurrences_kept: int


def combine_noise(parts: Sequence[GramPart], frobenius_sq: float, n_rows: int) -> SamplingNoise:
    """:func:`lmsat.measure.ngram.sampling_noise` of P from the buckets' partial sums (same formula, sums regrouped)."""
    tot = {k: sum(p.noise[k] for p in parts) for k in parts[0].noise}
    collision = tot["q_twice"] / tot["n_twice"] if tot["n_twice"] else (tot["q_many"] / tot["n_many"] if tot["n_many"] else 0.0)
    energy = tot["noise_many"] + tot["once_scale"] * (1.0 - collision)
    low, high = tot["noise_many"], tot["noise_many"] + tot["once_scale"]

    def floor(e: float) -> float:
        return float(min(1.0, np.sqrt(max(e, 0.0) / frobenius_sq))) if frobenius_sq > 0 else 0.0

    rows = max(n_rows, 1)
    return SamplingNoise(energy=energy, energy_low=low, energy_high=high, frobenius_norm=float(np.sqrt(frobenius_sq)),
                         floor=floor(energy), floor_low=floor(low), floor_high=floor(high), one_hot_fraction=tot["one_hot"] / rows,
                         singleton_fraction=(n_rows - tot["n_many"]) / rows, singleton_collision=collision)


def gram_spectrum(
    gram: sp.csr_matrix, rows_per_column: np.ndarray, frobenius_norm: float, top_k: int | None = None, method: str = "auto",
    device: str = "auto", max_dense: int | None = None, truncated_k: int | None = None, seed: int = 0,
) -> SparseSpectrum:
    """Singular values of P from G = P^T P (columns = P's observed columns), block by block.

    The blocks of P (connected components of its row--column graph) are the connected
    components of G's graph (two columns are linked when a row holds both); block b has
    ``rows_b`` rows (from ``rows_per_column``, each row counted at one of its columns) and
    ``cols_b`` columns, side_b = min(rows_b, cols_b). Its squared singular values are the
    non-zero eigenvalues of G_b:

    * side 1: the one value trace(G_b) (= |P_b|_F^2);
    * otherwise ``eigvalsh`` of the dense G_b in float64 (batched for cols_b <= SMALL_BLOCK),
      values under the rounding level cols_b * 10 eps lambda_max set to 0, as
      :func:`lmsat.measure.sparse_spectrum.sparse_singular_values` does; blocks whose side
      exceeds ``max_dense`` (or a small ``top_k``) get their top k eigenvalues by Lanczos
      (``eigsh``) on the sparse G_b, with residuals.

    The choices (trivial, small, dense, truncated) follow the sides of P's blocks as the
    one-process spectrum does, so ``blocks`` and ``rank_bound`` are the same; the values
    agree to rounding (the one-process spectrum diagonalises the smaller side's Gram).
    """
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import eigsh

    from lmsat.measure.sparse_spectrum import (
        DEFAULT_TRUNCATED_K,
        SMALL_BLOCK,
        _dense_block,
        _resolve_device,
        default_max_dense,
        dense_gram_eigenvalues,
    )

    if method not in ("auto", "dense", "lanczos"):
        raise UserError(f"--method {method} is not available with --ray (the spectrum from P^T P): use auto, dense or lanczos.")
    truncated_k = truncated_k or DEFAULT_TRUNCATED_K
    device = _resolve_device(device)
    max_dense = default_max_dense(device) if max_dense is None else max_dense
    gram = sp.csr_matrix(gram, dtype=np.float64)
    n_blocks, col_block = connected_components(gram, directed=False)
    n_cols_b = np.bincount(col_block, minlength=n_blocks)
    n_rows_b = np.bincount(col_block, weights=rows_per_column, minlength=n_blocks).round().astype(np.int64)
    side = np.minimum(n_rows_b, n_cols_b)
    diag = gram.diagonal()
    values: list[np.ndarray] = []
    trivial = np.flatnonzero(side == 1)
    values.append(np.bincount(col_block, weights=diag, minlength=n_blocks)[trivial])
    order = np.argsort(col_block, kind="stable")
    starts = np.concatenate([[0], np.cumsum(n_cols_b)])

    def columns_of(b: int) -> np.ndarray:
        return order[starts[b] : starts[b + 1]]

    rest = np.flatnonzero(side >= 2)
    batched = rest[n_cols_b[rest] <= SMALL_BLOCK]
    for m in np.unique(n_cols_b[batched]):  # one eigvalsh per block size
        members = batched[n_cols_b[batched] == m]
        per_chunk = max(1, (256 << 20) // (8 * int(m) * int(m)))
        for start in range(0, len(members), per_chunk):
            chunk = members[start : start + per_chunk]
            cols = np.concatenate([columns_of(int(b)) for b in chunk])
            sub = gram[cols][:, cols].toarray()
            stack = np.stack([sub[i * m : (i + 1) * m, i * m : (i + 1) * m] for i in range(len(chunk))])
            ev = dense_gram_eigenvalues(stack, device).ravel()
            values.append(ev[ev > 0])
    large = rest[n_cols_b[rest] > SMALL_BLOCK]
    dense_done: list[int] = []
    truncated: list[dict[str, Any]] = []
    cutoff, most_negative = 0.0, 0.0
    for b in large[np.argsort(-side[large], kind="stable")]:
        cols = columns_of(int(b))
        size = int(side[b])
        few = top_k is not None and top_k * 10 < size
        k = min(top_k or truncated_k, size)
        if method == "dense" or (method == "auto" and size <= max_dense and not few) or k >= len(cols) - 1:
            ev, lowest = _dense_block(gram[cols][:, cols].toarray(), device)
            most_negative = min(most_negative, lowest)
            values.append(ev)
            if size > SMALL_BLOCK:  # a block of few rows and many columns is a small block of P (its row side)
                dense_done.append(size)
            continue
        g_b = gram[cols][:, cols].tocsr()
        theta, vec = eigsh(g_b, k=k, which="LA", tol=1e-10, v0=np.random.default_rng(seed).standard_normal(len(cols)))
        idx = np.argsort(-theta)
        theta, vec = np.clip(theta[idx], 0.0, None), vec[:, idx]
        res = np.linalg.norm(g_b @ vec - vec * theta, axis=0)
        values.append(theta)
        truncated.append({"size": size, "k": k, "method": "lanczos",
                          "max_residual_relative": float(res.max() / max(theta[0], 1e-300)), "residual_sum": float(res.sum())})
        cutoff = max(cutoff, float(theta[-1]))
    eig = np.concatenate(values) if values else np.zeros(0)
    eig = np.sort(eig[eig > 0])[::-1]
    complete = not truncated
    if not complete:
        eig = eig[eig >= cutoff]
    if top_k is not None and len(eig) > top_k:
        eig, complete = eig[:top_k], False
    fro_sq = frobenius_norm * frobenius_norm
    accuracy: dict[str, Any] = {}
    if not truncated and top_k is None:
        accuracy["trace_relative_error"] = abs(float(np.sum(eig)) - fro_sq) / fro_sq
    accuracy["most_negative_eigenvalue_relative"] = most_negative
    if truncated:
        accuracy["truncated_blocks"] = truncated
        accuracy["max_residual_relative"] = max(t["max_residual_relative"] for t in truncated)
        accuracy["w_error_squared_bound"] = sum(t["residual_sum"] for t in truncated) / fro_sq
    parts = (["blocks"] if len(trivial) or ((side >= 2) & (side <= SMALL_BLOCK)).any() else []) + (["gram-dense"] if dense_done else []) + (["lanczos"] if truncated else [])
    return SparseSpectrum(
        singular_values=np.sqrt(eig), frobenius_norm=frobenius_norm, method="+".join(parts) or "blocks", complete=complete,
        accuracy=accuracy,
        blocks={"n_blocks": int(n_blocks), "trivial_blocks": len(trivial), "small_blocks": int(((side >= 2) & (side <= SMALL_BLOCK)).sum()),
                "large_blocks": [int(x) for x in sorted(side[side > SMALL_BLOCK], reverse=True)], "dense_block_sizes": dense_done},
        device=device, rank_bound=int(side.sum()),
    )


def p_spectrum_distributed(
    counts: NGramCounts, settings: Any, device: str, executor: Executor, n_buckets: int | None = None, resources: Resources = ONE_CPU,
) -> tuple[PSummary, SamplingNoise | None, SparseSpectrum | None]:
    """(what run_ngram reads of P, its sampling noise, its spectrum) with P^T P accumulated from bucket tasks.

    The contexts kept (``--min-count``, ``--max-contexts``, ``--context-selection``: a choice over
    all contexts) are chosen here; each bucket of contexts (contiguous first-token ranges, as
    in counting) is one task building its rows of P and its :class:`GramPart`; the driver
    sums them into G and computes the spectrum (:func:`gram_spectrum`) on this node.
    """
    from lmsat.measure.ngram import select_contexts
    from lmsat.measure.sparse_spectrum import cpu_threads_for_load

    all_counts = counts.context_counts()
    keep = select_contexts(all_counts, settings.min_count, settings.max_contexts, settings.context_selection, settings.seed)
    if len(keep) == 0:
        return PSummary((0, 0), 0, 0, 0), None, None
    total = float(all_counts[keep].astype(np.float64).sum()) if settings.row_weight == "frequency" else None
    if n_buckets is None:
        n_buckets = max(2, 2 * int(getattr(executor, "cluster_cpus", lambda: 1)()))
    bounds = bucket_bounds(counts.vocab_size, n_buckets)
    tables = split_by_first_token(counts, bounds)
    first = counts.contexts[:, 0] if counts.n_contexts else np.zeros(0, np.int64)
    cuts = np.searchsorted(first, bounds, side="left")
    args = []
    for b, table in enumerate(tables):
        c0, c1 = int(cuts[b]), int(cuts[b + 1])
        mine = keep[(keep >= c0) & (keep < c1)] - c0
        args.append((executor.share(table), mine, total))
    parts: list[GramPart] = []
    for done in track(executor.map(gram_part, args, resources, fresh_workers=False), "P^T P from buckets (Ray)", total=len(args), unit="buckets"):
        if done.value is None:
            raise RuntimeError(f"P^T P of bucket {done.index} failed: {done.error}")
        parts.append(done.value)
    diag = np.sum([p.diag for p in parts], axis=0)
    gram = parts[0].gram
    for p in parts[1:]:
        gram = gram + p.gram
    full_diag = diag + gram.diagonal()
    columns = np.flatnonzero(full_diag > 0)
    g = gram[columns][:, columns].tocsr() + sp.diags(diag[columns].astype(np.float64), dtype=np.float64).tocsr()
    rows_by_column = np.sum([p.rows_by_first_column for p in parts], axis=0)[columns]
    fro_sq = float(sum(p.frobenius_sq for p in parts))
    n_rows = sum(p.n_rows for p in parts)
    noise = combine_noise(parts, fro_sq, n_rows)
    summary = PSummary((n_rows, len(columns)), sum(p.n_ngrams for p in parts), sum(p.n_ngrams for p in parts), sum(p.n_occurrences for p in parts))
    with cpu_threads_for_load(device) as threads:  # one LAPACK thread on a busy CPU, as the one-process spectrum
        spectrum = gram_spectrum(g, rows_by_column, float(np.sqrt(fro_sq)), top_k=settings.top_k, method=settings.method, device=device,
                                 max_dense=settings.max_dense, seed=settings.seed)
    if spectrum.device == "cpu":
        spectrum.device = f"cpu ({threads} thread{'s' if threads > 1 else ''})"
    return summary, noise, spectrum
