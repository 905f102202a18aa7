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
from functools import partial
from typing import Any

import numpy as np

from lmsat.errors import UserError
from lmsat.executor import ONE_CPU, Executor, Resources
from lmsat.measure.ngram import (
    NGramCounts,
    _empty_counts,
    concat_disjoint,
    count_ngrams,
    merge_counts,
)
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

    The counter of ``run_counts(..., counter=partial(count_corpus_distributed, executor=...))``;
    ``spill_dir`` is unused (Ray's object store spills the shard tables to disk when memory is full).
    """
    from lmsat.loading.corpus import iter_document_pieces

    if settings.max_tokens is not None:
        raise UserError("--max-tokens cannot be combined with --ray (the shards are counted at once); cut the corpus instead, or drop --ray.")
    shard_chars = int(os.environ.get("LMSAT_RAY_SHARD_CHARS", shard_chars))
    pieces = iter_document_pieces(corpus, settings.documents)
    return count_distributed(text_shards(pieces, shard_chars), settings.n, tokenizer.vocab_size, executor, tokenizer=tokenizer, resources=resources)


@contextmanager
def ray_counter(use_ray: bool, address: str | None, settings: Any, cpus_per_task: float = 1.0) -> Iterator[Any]:
    """The ``counter`` for ``run_ngram``: None (one process) or the Ray counter, with its executor closed on exit."""
    if not use_ray:
        yield None
        return
    if settings.max_tokens is not None:
        raise UserError("--max-tokens cannot be combined with --ray (the shards are counted at once); cut the corpus instead, or drop --ray.")
    if cpus_per_task <= 0:
        raise UserError(f"--cpus-per-task must be positive (got {cpus_per_task}).")
    from lmsat.executor import RayExecutor

    executor = RayExecutor(address)
    try:
        yield partial(count_corpus_distributed, executor=executor, resources=Resources(cpus=cpus_per_task))
    finally:
        executor.close()
