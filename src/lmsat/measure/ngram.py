"""n-gram counts of a token stream and the next-token matrix P of the study's Fig. 7 (docs/methods.md §9).

An n-gram is a window (t_1, ..., t_n) of the token stream; its context is the
first n-1 tokens c = (t_1, ..., t_{n-1}) and its next token w = t_n. With
N(c, w) the number of occurrences of the window and N(c) = sum_w N(c, w):

* P has one row per observed context and one column per vocabulary id, and
  (uniform row weight, the study's) P[c, w] = N(c, w) / N(c): each row is the
  context's empirical next-token distribution and weighs the same in |P|_F;
* frequency row weight: P[c, w] = sqrt(N(c) / N) * N(c, w) / N(c), N the number
  of kept windows, so |P - Q|_F^2 = sum_c p(c) |P_c - Q_c|^2 is the squared
  error averaged over contexts as they occur in the text.

Counting is vectorised and sort-based, with no Python loop per token: each
window's tokens are packed into one integer key (mixed radix in base V, as many
tokens per 64-bit word as fit; when V^(n-1) overflows 64 bits, the packed prefix
is replaced by its rank among the distinct prefixes, which keeps the
lexicographic order exactly: no hashing, no collisions); sorting the keys
(``np.argsort`` of the contexts, then ``np.sort`` of (context rank, next token))
groups equal n-grams, and the group sizes are the counts. When the last n-1 ids of a window fit one uint64
at ceil(log2 V) bits each (5-grams with V <= 65,536), a faster route groups the
windows by first token with a stable radix sort and ``np.sort``s the packed
rest within each group (:func:`_count_by_first_token`). Streams larger than
memory are counted in shards (with n-1 tokens of overlap so no window is lost
or counted twice) and the shard tables, each sorted, are merged as sorted runs
with exact int64 counts (:func:`merge_counts`), in memory or spilled to disk as
range buckets of first tokens (slices of the sorted tables) and merged bucket by
bucket. Every table is sorted lexicographically by (context, next
token), so the contexts whose first token lies in a range are one slice: shards
can be counted apart (e.g. as Ray tasks) and merged by partitioning on context.

With numba installed (``pip install lmsat[fast]``; :data:`USE_NUMBA`), the first-token route runs
as compiled passes (:mod:`lmsat.measure._ngram_kernels`): one counting-sort scatter that packs the
keys on the way, per-group LSD radix sorts, one fill of the table (next tokens written over the
keys), and merges as pairwise linear merges of sorted runs. The numpy route gives identical tables.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from lmsat.measure import _ngram_kernels as _kernels

RowWeight = Literal["uniform", "frequency"]
ROW_WEIGHTS: tuple[str, ...] = ("uniform", "frequency")
ContextSelection = Literal["frequent", "random"]
CONTEXT_SELECTIONS: tuple[str, ...] = ("frequent", "random")
_U64_MAX = (1 << 64) - 1
_LOOKUP_MAX_VOCAB = 1 << 24
DEFAULT_SHARD_TOKENS = 50_000_000  # counting peaks near 90 bytes per token: ~4.5 GB per shard
# Compiled kernels (numba, ``pip install lmsat[fast]``) when installed, for inputs of at least
# NUMBA_MIN_ROWS windows / n-gram rows (below it, compiling or loading them costs more than it saves);
# the numpy route gives identical tables.
USE_NUMBA: bool = _kernels.HAVE_NUMBA
NUMBA_MIN_ROWS = 2_000_000


def _compiled(n_rows: int) -> bool:
    return USE_NUMBA and n_rows >= NUMBA_MIN_ROWS


@dataclass(frozen=True)
class NGramCounts:
    """Counts N(c, w) of every observed n-gram, grouped by context (a CSR count matrix).

    ``contexts``: (C, n-1) token ids of the distinct contexts (non-negative integers: uint16 or
    uint32 from the first-token counter, int64 otherwise; cast before arithmetic);
    ``indptr``: (C+1,) int64, the n-grams of context i are ``indptr[i]:indptr[i+1]``;
    ``next_token``: (K,) int64 next-token ids, increasing within a context;
    ``count``: (K,) int64 occurrences N(c, w) >= 1;
    ``n_tokens``: tokens of the stream(s) counted (windows = n_tokens - n + 1 per stream).
    """

    n: int
    vocab_size: int
    contexts: np.ndarray
    indptr: np.ndarray
    next_token: np.ndarray
    count: np.ndarray
    n_tokens: int

    @property
    def n_contexts(self) -> int:
        """C, the number of distinct (n-1)-token contexts."""
        return int(self.contexts.shape[0])

    @property
    def n_ngrams(self) -> int:
        """K, the number of distinct n-grams (non-zeros of P)."""
        return int(self.next_token.shape[0])

    @property
    def n_occurrences(self) -> int:
        """sum N(c, w): the number of n-gram windows counted."""
        return int(self.count.sum())

    def context_counts(self) -> np.ndarray:
        """N(c) for every context, (C,) int64."""
        if self.n_ngrams == 0:
            return np.zeros(0, dtype=np.int64)
        return np.add.reduceat(self.count, self.indptr[:-1], dtype=np.int64)

    def observed_vocab(self) -> np.ndarray:
        """Sorted distinct next-token ids (the non-zero columns of P)."""
        return np.unique(self.next_token)

    def ngram_rows(self) -> np.ndarray:
        """(K, n) int64: each distinct n-gram as its context tokens then its next token."""
        ctx = np.repeat(self.contexts, np.diff(self.indptr), axis=0)
        return np.concatenate([ctx, self.next_token[:, None]], axis=1)

    def as_dict(self) -> dict[tuple[int, ...], int]:
        """{(t_1, ..., t_n): N} (for tests and small inspections only)."""
        rows = self.ngram_rows()
        return {tuple(int(x) for x in r): int(c) for r, c in zip(rows, self.count)}

    def arrays(self) -> dict[str, np.ndarray]:
        """Compact arrays for storage (uint32 ids when V fits)."""
        id_dtype = np.uint32 if self.vocab_size <= np.iinfo(np.uint32).max else np.int64
        return {
            "contexts": self.contexts.astype(id_dtype),
            "indptr": self.indptr.astype(np.int64),
            "next_token": self.next_token.astype(id_dtype),
            "count": self.count.astype(np.int64),
            "meta": np.array([self.n, self.vocab_size, self.n_tokens], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> NGramCounts:
        n, vocab_size, n_tokens = (int(x) for x in arrays["meta"])
        return cls(
            n=n,
            vocab_size=vocab_size,
            contexts=np.asarray(arrays["contexts"], dtype=np.int64).reshape(-1, n - 1),
            indptr=np.asarray(arrays["indptr"], dtype=np.int64),
            next_token=np.asarray(arrays["next_token"], dtype=np.int64),
            count=np.asarray(arrays["count"], dtype=np.int64),
            n_tokens=n_tokens,
        )


def _empty_counts(n: int, vocab_size: int, n_tokens: int = 0) -> NGramCounts:
    return NGramCounts(
        n=n,
        vocab_size=vocab_size,
        contexts=np.zeros((0, n - 1), dtype=np.int64),
        indptr=np.zeros(1, dtype=np.int64),
        next_token=np.zeros(0, dtype=np.int64),
        count=np.zeros(0, dtype=np.int64),
        n_tokens=n_tokens,
    )


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Indices where a new value starts in a sorted array (the first is 0)."""
    flags = np.empty(len(sorted_keys), dtype=bool)
    if len(flags):
        flags[0] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=flags[1:])
    return np.flatnonzero(flags)


def _dense_rank(key: np.ndarray) -> tuple[np.ndarray, int]:
    """Rank of each value among the distinct values of ``key`` (order-preserving), and their number."""
    order = np.argsort(key)
    starts = _group_starts(key[order])
    step = np.zeros(len(key), dtype=np.uint64)
    step[starts[1:]] = 1
    rank = np.empty(len(key), dtype=np.uint64)
    rank[order] = np.cumsum(step, dtype=np.uint64)
    return rank, len(starts)


def lexicographic_keys(columns: np.ndarray, base: int) -> np.ndarray:
    """One integer per row of ``columns`` (N, m), ordered exactly like the rows lexicographically.

    Entries must lie in [0, base). Columns are packed in mixed radix,
    key = (...(c_1 * base + c_2) * base + ...), as long as the key fits in 64
    bits; when it would overflow, the partial key is replaced by its rank among
    the distinct partial keys, which is < N and order-preserving, and packing
    goes on. Equal keys <=> equal rows; no hashing, no collisions.
    """
    columns = np.asarray(columns)
    n_rows, m = columns.shape
    if m == 0:
        return np.zeros(n_rows, dtype=np.uint64)
    key = _as_u64(columns[:, 0]).copy()
    bound = base  # exclusive upper bound of key
    for j in range(1, m):
        if bound * base > _U64_MAX + 1:
            key, bound = _dense_rank(key)
            bound = max(1, bound)
        key *= np.uint64(base)
        key += _as_u64(columns[:, j])
        bound *= base
    return key


def _as_u64(ids: np.ndarray) -> np.ndarray:
    """Non-negative int64 ids as uint64 without a copy (a view), other dtypes converted."""
    return ids.view(np.uint64) if ids.dtype == np.int64 else ids.astype(np.uint64)


def _decode_keys(keys: np.ndarray, base: int, width: int) -> np.ndarray:
    """Inverse of mixed-radix packing: (len(keys), width) int64 digits in base ``base``."""
    out = np.empty((len(keys), width), dtype=np.int64)
    rest = keys.copy()
    for j in range(width - 1, -1, -1):
        out[:, j] = (rest % np.uint64(base)).astype(np.int64)
        rest //= np.uint64(base)
    return out


def _group_counts(rows: np.ndarray, weights: np.ndarray | None, n: int, vocab_size: int, n_tokens: int) -> NGramCounts:
    """Distinct rows of ``rows`` (K, n) with their total weights, as :class:`NGramCounts`.

    When V^n fits in 64 bits, each n-gram is one packed key and a single
    ``np.sort`` counts them. Otherwise the contexts are packed and argsorted,
    each window gets its context's rank, and (rank, next token) -- which fits --
    is sorted again (already grouped by rank, so cheap).
    """
    n_rows = rows.shape[0]
    if n_rows == 0:
        return _empty_counts(n, vocab_size, n_tokens)
    v = np.uint64(vocab_size)
    # Temporaries are freed (del) and sorts done in place: peak ~ 4 arrays of 8 bytes per row.
    if vocab_size**n <= _U64_MAX + 1:
        key = lexicographic_keys(rows, vocab_size)
        if weights is None:
            key.sort()
        else:
            order = np.argsort(key)
            key, weights = key[order], weights[order]
            del order
        starts = _group_starts(key)
        keys = key[starts]
        del key
        ctx_key = keys // v
        ctx_starts = _group_starts(ctx_key)
        contexts = _decode_keys(ctx_key[ctx_starts], vocab_size, n - 1)
    else:
        ctx_key = lexicographic_keys(rows[:, : n - 1], vocab_size)
        order = np.argsort(ctx_key)
        ctx_first = _group_starts(ctx_key[order])
        del ctx_key
        contexts = rows[order[ctx_first], : n - 1].astype(np.int64)
        full = np.zeros(n_rows, dtype=np.uint64)
        full[ctx_first[1:]] = 1
        np.cumsum(full, out=full)  # the context's rank, for every window in context order
        full *= v
        full += _as_u64(rows[:, n - 1])[order]
        if weights is None:
            del order
            full.sort()
        else:
            order2 = np.argsort(full)
            full, weights = full[order2], weights[order][order2]
            del order, order2
        starts = _group_starts(full)
        keys = full[starts]
        del full
        ctx_starts = _group_starts(keys // v)
    if weights is None:
        count = np.diff(np.append(starts, n_rows)).astype(np.int64)
    else:
        count = np.add.reduceat(weights, starts).astype(np.int64)
    next_token = (keys % v).astype(np.int64)
    indptr = np.append(ctx_starts, len(keys)).astype(np.int64)
    return NGramCounts(n, vocab_size, contexts, indptr, next_token, count, n_tokens)


def _order_by_first(first: np.ndarray, vocab_size: int) -> np.ndarray:
    """Stable argsort of ids in [0, vocab_size): LSD radix over 16-bit digits (numpy sorts uint16 by radix)."""
    if vocab_size <= 1 << 16:
        return np.argsort(first.astype(np.uint16), kind="stable")
    low = (first & 0xFFFF).astype(np.uint16)
    order = np.argsort(low, kind="stable")
    del low
    high = (first[order] >> 16).astype(np.uint32)
    if vocab_size <= 1 << 32:
        high = high.astype(np.uint16)
    return order[np.argsort(high, kind="stable")]


def _id_bits(vocab_size: int) -> int:
    """Bits per token id in a shift-packed key (ids in [0, vocab_size))."""
    return max(1, (vocab_size - 1).bit_length())


def _packs_in_u64(vocab_size: int, width: int) -> bool:
    """True when ``width`` ids fit one uint64 by shifts and the id table is small (the first-token path)."""
    return width * _id_bits(vocab_size) <= 64 and vocab_size <= _LOOKUP_MAX_VOCAB


def _table_from_sorted(
    box: list[np.ndarray], group_end: np.ndarray, count: np.ndarray | None, n: int, vocab_size: int, n_tokens: int
) -> NGramCounts:
    """The count table of n-grams sorted by (first token, rest key), rest = t_2 .. t_n packed by shifts.

    ``box``: [rest], handed over (emptied here, so the keys are freed as soon as possible);
    ``group_end`` (V,): the rows of first token v are ``group_end[v-1]:group_end[v]``; equal
    (first, rest) rows are adjacent; ``count``: each row's weight (None: 1 each). Context ids
    are stored as uint16 (V <= 65,536) or uint32.
    """
    rest = box.pop()
    n_rows = rest.size
    bits = _id_bits(vocab_size)
    new = np.empty(n_rows, dtype=bool)
    if n_rows:
        new[0] = True
        np.not_equal(rest[1:], rest[:-1], out=new[1:])
    bounds = group_end[:-1][(group_end[:-1] > 0) & (group_end[:-1] < n_rows)]
    new[bounds] = True  # a new first token starts a new n-gram even when the rest key repeats
    starts = np.flatnonzero(new)
    del new
    if count is None:
        cnt = np.diff(np.append(starts, n_rows))
    else:
        cnt = np.add.reduceat(count, starts) if starts.size else np.zeros(0, np.int64)
    # first token of each distinct n-gram: group v holds the starts in [group_end[v-1], group_end[v])
    per_first = np.diff(np.searchsorted(starts, group_end), prepend=0)
    keys = rest[starts]
    del starts, rest
    id_dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    firsts = np.repeat(np.arange(vocab_size, dtype=id_dtype), per_first)
    ctx_rest = keys >> np.uint64(bits)
    keys &= np.uint64((1 << bits) - 1)
    next_token = keys.view(np.int64)
    new_ctx = np.empty(ctx_rest.size, dtype=bool)
    if ctx_rest.size:
        new_ctx[0] = True
        np.not_equal(ctx_rest[1:], ctx_rest[:-1], out=new_ctx[1:])
        new_ctx[1:] |= firsts[1:] != firsts[:-1]
    ctx_starts = np.flatnonzero(new_ctx)
    del new_ctx
    contexts = np.empty((ctx_starts.size, n - 1), dtype=id_dtype)
    contexts[:, 0] = firsts[ctx_starts]
    del firsts
    if n > 2:
        ctx_rest = ctx_rest[ctx_starts]
        mask = np.uint64((1 << bits) - 1)
        for j in range(n - 2, 0, -1):
            contexts[:, j] = ctx_rest & mask
            ctx_rest >>= np.uint64(bits)
    del ctx_rest
    indptr = np.append(ctx_starts, next_token.size)
    return NGramCounts(n, vocab_size, contexts, indptr, next_token, cnt.astype(np.int64, copy=False), n_tokens)


def _count_by_first_token(tokens: np.ndarray, n: int, vocab_size: int) -> NGramCounts:
    """count_ngrams when the last n-1 ids of a window fit one uint64 by shifts (5-grams: V <= 65,536).

    Windows are grouped by their first token with a stable radix sort (linear), the other
    n-1 tokens packed into one uint64 key (b = ceil(log2 V) bits each, so the key order is
    the lexicographic order and unpacking is shifts and masks) and each first-token group
    sorted with ``np.sort`` in place: no 64-bit argsort over all windows, no 2-D gathers.
    """
    n_win = tokens.size - n + 1
    if _compiled(n_win):
        kern = _kernels.kernels()
        per_first = np.bincount(tokens[:n_win], minlength=vocab_size)
        group_end = np.cumsum(per_first)
        group_start = group_end - per_first
        del per_first
        width = (n - 1) * _id_bits(vocab_size)
        rest_mask = np.uint64(_U64_MAX if width >= 64 else (1 << width) - 1)
        rest = kern.scatter_by_first(tokens, n, _id_bits(vocab_size), rest_mask, group_start)
        del group_start
        kern.sort_groups_u64(rest, group_end, int(np.diff(group_end, prepend=0).max()))
        box = [rest]
        del rest
        return _table_compiled(box, group_end, None, n, vocab_size, int(tokens.size))
    bits = np.uint64(_id_bits(vocab_size))
    rest = np.zeros(n_win, dtype=np.uint64)
    u = _as_u64(tokens)
    for j in range(1, n):
        rest <<= bits
        rest |= u[j : j + n_win]
    order = _order_by_first(tokens[:n_win], vocab_size)
    rest = rest[order]
    del order
    group_end = np.cumsum(np.bincount(tokens[:n_win], minlength=vocab_size))
    _sort_groups(rest, group_end, None)
    box = [rest]
    del rest
    return _table_from_sorted(box, group_end, None, n, vocab_size, int(tokens.size))


def _ctx_dtype(vocab_size: int, n: int) -> type:
    """Context id dtype of a table: uint16/uint32 on the first-token route, int64 otherwise."""
    if not _packs_in_u64(vocab_size, n - 1):
        return np.int64
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _table_compiled(
    box: list[np.ndarray], group_end: np.ndarray, count: np.ndarray | None, n: int, vocab_size: int, n_tokens: int
) -> NGramCounts:
    """:func:`_table_from_sorted` in two compiled passes (sizes, then fill): the same table."""
    rest = box.pop()
    bits = _id_bits(vocab_size)
    group_end = np.ascontiguousarray(group_end, dtype=np.int64)
    kern = _kernels.kernels()
    n_k, n_c = kern.table_sizes(rest, group_end, bits)
    contexts = np.empty((n_c, n - 1), dtype=_ctx_dtype(vocab_size, n))
    indptr = np.empty(n_c + 1, dtype=np.int64)
    cnt = np.empty(n_k, dtype=np.int64)
    next_token = rest.view(np.int64)[:n_k]  # written in place over the keys, which are read first
    weights = np.zeros(1, dtype=np.int64) if count is None else np.ascontiguousarray(count, dtype=np.int64)
    kern.table_fill(rest, group_end, weights, count is not None, bits, contexts, indptr, next_token, cnt)
    del rest
    return NGramCounts(n, vocab_size, contexts, indptr, next_token, cnt, n_tokens)


def _merge_pair(a: NGramCounts, b: NGramCounts, id_dtype: type) -> NGramCounts:
    """merge_counts of two sorted tables by one compiled linear merge (outputs sized C_a + C_b, K_a + K_b, then trimmed)."""
    ctx_a = np.ascontiguousarray(a.contexts, dtype=id_dtype)
    ctx_b = np.ascontiguousarray(b.contexts, dtype=id_dtype)
    args = []
    for t in (a, b):
        args.append(np.ascontiguousarray(t.indptr, dtype=np.int64))
        args.append(np.ascontiguousarray(t.next_token, dtype=np.int64))
        args.append(np.ascontiguousarray(t.count, dtype=np.int64))
    ctx_o = np.empty((ctx_a.shape[0] + ctx_b.shape[0], a.n - 1), dtype=id_dtype)
    ind_o = np.empty(ctx_o.shape[0] + 1, dtype=np.int64)
    next_o = np.empty(a.n_ngrams + b.n_ngrams, dtype=np.int64)
    cnt_o = np.empty(next_o.size, dtype=np.int64)
    n_c, n_k = _kernels.kernels().merge_two(ctx_a, *args[:3], ctx_b, *args[3:], ctx_o, ind_o, next_o, cnt_o)
    # Untouched tails of the upper-bound buffers are never written, so they hold no memory pages.
    return NGramCounts(a.n, a.vocab_size, ctx_o[:n_c], ind_o[: n_c + 1], next_o[:n_k], cnt_o[:n_k], a.n_tokens + b.n_tokens)


def _merge_compiled(parts: Sequence[NGramCounts], n: int, vocab_size: int, n_tokens: int) -> NGramCounts:
    """merge_counts as a balanced tree of pairwise linear merges of sorted runs (each input freed once merged)."""
    id_dtype = _ctx_dtype(vocab_size, n)
    queue = list(parts)
    while len(queue) > 1:
        merged = []
        while len(queue) >= 2:
            a, b = queue.pop(0), queue.pop(0)
            merged.append(_merge_pair(a, b, id_dtype))
            del a, b
        queue = merged + queue
    out = queue[0]
    contexts = out.contexts.astype(id_dtype, copy=False)
    return NGramCounts(n, vocab_size, contexts, out.indptr, out.next_token, out.count, n_tokens)


def _sort_groups(rest: np.ndarray, group_end: np.ndarray, count: np.ndarray | None) -> None:
    """Sort ``rest`` in place within each first-token group (carrying ``count`` along when given)."""
    sizes = np.diff(group_end, prepend=0)
    for v_id in np.flatnonzero(sizes > 1).tolist():
        end = int(group_end[v_id])
        start = end - int(sizes[v_id])
        if count is None:
            rest[start:end].sort()
        else:  # a concatenation of sorted runs: the stable sort (timsort / radix) merges them
            o = np.argsort(rest[start:end], kind="stable")
            rest[start:end] = rest[start:end][o]
            count[start:end] = count[start:end][o]


def _merge_by_first_token(parts: Sequence[NGramCounts], n: int, vocab_size: int, n_tokens: int) -> NGramCounts:
    """merge_counts of sorted tables as sorted runs (the last n-1 ids fit one uint64 by shifts).

    Each table is already sorted by (first token, rest key): concatenated and grouped by
    first token with a stable radix sort, every first-token group is a concatenation of at
    most len(parts) sorted runs, which a stable (run-detecting) argsort merges; int64 counts
    are summed exactly. Per n-gram row: 8 bytes of key, 8 of count, the first token.
    """
    bits = np.uint64(_id_bits(vocab_size))
    firsts, rests = [], []
    for p in parts:
        lengths = np.diff(p.indptr)
        ctx_rest = np.zeros(p.n_contexts, dtype=np.uint64)
        for j in range(1, n - 1):
            ctx_rest <<= bits
            ctx_rest |= _as_u64(p.contexts[:, j])
        rest = np.repeat(ctx_rest, lengths)
        del ctx_rest
        rest <<= bits
        rest |= _as_u64(p.next_token)
        rests.append(rest)
        firsts.append(np.repeat(p.contexts[:, 0], lengths))
    first = np.concatenate(firsts)
    del firsts
    rest = np.concatenate(rests)
    del rests
    count = np.concatenate([p.count for p in parts]).astype(np.int64, copy=False)
    order = _order_by_first(first, vocab_size)
    rest, count = rest[order], count[order]
    del order
    group_end = np.cumsum(np.bincount(first, minlength=vocab_size))
    del first
    _sort_groups(rest, group_end, count)
    box = [rest]
    del rest
    return _table_from_sorted(box, group_end, count, n, vocab_size, n_tokens)


def count_ngrams(tokens: np.ndarray, n: int, vocab_size: int) -> NGramCounts:
    """N(c, w) for every window of ``n`` tokens of one stream (sort-based, vectorised).

    ``tokens`` are ids in [0, vocab_size); a stream shorter than n gives no n-gram.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    tokens = np.ascontiguousarray(tokens, dtype=np.int64).ravel()
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got [{tokens.min()}, {tokens.max()}]")
    if tokens.size < n:
        return _empty_counts(n, vocab_size, int(tokens.size))
    if vocab_size**n > _U64_MAX + 1 and _packs_in_u64(vocab_size, n - 1):
        return _count_by_first_token(tokens, n, vocab_size)
    windows = np.lib.stride_tricks.sliding_window_view(tokens, n)
    return _group_counts(windows, None, n, vocab_size, int(tokens.size))


def merge_counts(parts: Sequence[NGramCounts]) -> NGramCounts:
    """Sum of several count tables (same n and V): N(c, w) = sum over parts (sorted runs, int64 counts)."""
    if not parts:
        raise ValueError("merge_counts needs at least one table")
    n, vocab_size = parts[0].n, parts[0].vocab_size
    if any(p.n != n or p.vocab_size != vocab_size for p in parts):
        raise ValueError("merge_counts: all tables need the same n and vocabulary size")
    n_tokens = sum(p.n_tokens for p in parts)
    parts = [p for p in parts if p.n_ngrams]
    if not parts:
        return _empty_counts(n, vocab_size, n_tokens)
    if len(parts) == 1:
        p = parts[0]
        return NGramCounts(n, vocab_size, p.contexts, p.indptr, p.next_token, p.count, n_tokens)
    if _compiled(sum(p.n_ngrams for p in parts)):
        return _merge_compiled(parts, n, vocab_size, n_tokens)
    if _packs_in_u64(vocab_size, n - 1):
        return _merge_by_first_token(parts, n, vocab_size, n_tokens)
    rows = np.concatenate([p.ngram_rows() for p in parts])
    weights = np.concatenate([p.count for p in parts])  # int64: exact at any count
    return _group_counts(rows, weights, n, vocab_size, n_tokens)


def _first_token_bounds(counts: NGramCounts, n_buckets: int) -> np.ndarray:
    """(B+1,) increasing first-token ids splitting a table's n-gram rows into about equal buckets.

    Bucket b holds the contexts whose first id lies in [bounds[b], bounds[b+1]); bounds[0] = 0 and
    bounds[-1] = V, so every table, sorted by context, splits into B contiguous slices.
    """
    at = (counts.n_ngrams * np.arange(1, n_buckets)) // n_buckets  # n-gram rows at the quantiles
    ctx = np.searchsorted(counts.indptr, at, side="right") - 1
    cuts = counts.contexts[np.clip(ctx, 0, max(0, counts.n_contexts - 1)), 0].astype(np.int64) if counts.n_contexts else []
    return np.unique(np.concatenate([[0], cuts, [counts.vocab_size]])).astype(np.int64)


def _save_spill(path: Path, counts: NGramCounts) -> None:
    """Write a table compactly (ids in their own dtype, counts as uint32 when they fit) in one file, atomically."""
    ids = counts.contexts.dtype  # uint16 / uint32 on the first-token route
    cnt = np.uint32 if counts.n_ngrams == 0 or int(counts.count.max()) <= np.iinfo(np.uint32).max else np.int64
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, np.array([counts.n_contexts, counts.n_ngrams, counts.n_tokens], dtype=np.int64))
        np.save(fh, counts.contexts)
        np.save(fh, counts.indptr)
        np.save(fh, counts.next_token.astype(ids))
        np.save(fh, counts.count.astype(cnt))
    tmp.replace(path)


def _load_spill(path: Path, n: int, vocab_size: int) -> NGramCounts:
    with open(path, "rb") as fh:
        _, _, n_tokens = (int(x) for x in np.load(fh))
        contexts = np.load(fh)
        indptr = np.load(fh)
        next_token = np.load(fh).astype(np.int64)
        count = np.load(fh).astype(np.int64)
    return NGramCounts(n, vocab_size, contexts, indptr, next_token, count, n_tokens)


def _slice_contexts(counts: NGramCounts, c0: int, c1: int) -> NGramCounts:
    """Contexts c0:c1 of a table (contiguous, so views and no gather)."""
    k0, k1 = int(counts.indptr[c0]), int(counts.indptr[c1])
    return NGramCounts(
        counts.n, counts.vocab_size, counts.contexts[c0:c1], counts.indptr[c0 : c1 + 1] - k0,
        counts.next_token[k0:k1], counts.count[k0:k1], counts.n_tokens,
    )


def _select_contexts(counts: NGramCounts, keep: np.ndarray) -> NGramCounts:
    """The rows of ``counts`` whose context index is in ``keep`` (sorted int array)."""
    lengths = np.diff(counts.indptr)[keep]
    starts = counts.indptr[:-1][keep]
    idx = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return NGramCounts(
        counts.n, counts.vocab_size, counts.contexts[keep], indptr, counts.next_token[idx], counts.count[idx], counts.n_tokens
    )


class NGramCounter:
    """Count the n-grams of a long token stream fed in pieces, in bounded memory.

    ``add(ids)`` appends ids to the stream; every ``shard_tokens`` tokens the
    buffer is counted (:func:`count_ngrams`) with the last n-1 tokens carried
    over, so the result equals counting the whole stream at once. Shard tables
    are merged when more than ``max_rows_in_memory`` n-gram rows are held; with
    a ``spill_dir`` they are instead cut into ``n_buckets`` ranges of first tokens
    (slices of the sorted tables) and written to disk, and :meth:`finish` merges one
    bucket at a time (peak memory: one bucket's parts plus the final table);
    :meth:`finish_buckets` yields the buckets' tables one by one instead.
    """

    def __init__(
        self,
        n: int,
        vocab_size: int,
        shard_tokens: int = DEFAULT_SHARD_TOKENS,
        max_rows_in_memory: int = 60_000_000,
        spill_dir: str | Path | None = None,
        n_buckets: int = 16,
    ) -> None:
        if n < 2:
            raise ValueError(f"n must be >= 2, got {n}")
        if shard_tokens < n:
            raise ValueError(f"shard_tokens must be >= n, got {shard_tokens}")
        self.n, self.vocab_size = n, vocab_size
        self.shard_tokens, self.max_rows_in_memory = shard_tokens, max_rows_in_memory
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.n_buckets = n_buckets
        self._pieces: list[np.ndarray] = []
        self._buffered = 0
        self._carry = np.zeros(0, dtype=np.int64)
        self._parts: list[NGramCounts] = []
        self._spills = 0
        self._bounds: np.ndarray | None = None
        self.n_tokens = 0
        self.n_shards = 0

    def add(self, ids: np.ndarray | Sequence[int]) -> None:
        """Append token ids to the stream."""
        arr = np.asarray(ids, dtype=np.int64).ravel()
        if arr.size == 0:
            return
        self._pieces.append(arr)
        self._buffered += arr.size
        self.n_tokens += arr.size
        if self._buffered >= self.shard_tokens:
            self._count_buffer()

    def _count_buffer(self) -> None:
        if not self._pieces:
            return
        stream = np.concatenate([self._carry, *self._pieces])
        self._pieces, self._buffered = [], 0
        part = count_ngrams(stream, self.n, self.vocab_size)
        # Tokens are attributed once: the carried prefix was counted in the previous shard.
        part = NGramCounts(part.n, part.vocab_size, part.contexts, part.indptr, part.next_token, part.count, stream.size - self._carry.size)
        self._carry = stream[-(self.n - 1):].copy()
        self.n_shards += 1
        self._parts.append(part)
        held = sum(p.n_ngrams for p in self._parts)
        if held > self.max_rows_in_memory:
            if self.spill_dir is not None:
                self._spill()
            elif len(self._parts) > 1:
                self._parts = [merge_counts(self._parts)]

    def _spill(self) -> None:
        """Write each held shard table to disk as range buckets of first tokens (slices: no merge, no gather)."""
        assert self.spill_dir is not None
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        if self._bounds is None:
            self._bounds = _first_token_bounds(self._parts[0], self.n_buckets)
        parts, self._parts = self._parts, []
        while parts:
            part = parts.pop(0)
            cuts = np.searchsorted(part.contexts[:, 0], self._bounds)
            for b in range(len(self._bounds) - 1):
                piece = _slice_contexts(part, int(cuts[b]), int(cuts[b + 1]))
                if piece.n_ngrams:
                    _save_spill(self.spill_dir / f"bucket{b:03d}-{self._spills:05d}.npy", piece)
            self._spills += 1
            del part

    def finish_buckets(self) -> Iterator[NGramCounts]:
        """Count what is buffered and yield the whole stream's table in pieces, in context order.

        Without spilling: one table (as :meth:`finish`). After spilling: one merged table per range
        bucket of first tokens (peak memory: one bucket's parts and its merge), so a stream whose
        table exceeds memory can be consumed bucket by bucket; the spill files are removed at the
        end. Concatenated (:func:`concat_disjoint`), the pieces equal :meth:`finish`. Each piece's
        ``n_tokens`` is the whole stream's.
        """
        self._count_buffer()
        n_tokens = self.n_tokens
        if self._spills == 0:
            out = merge_counts(self._parts) if self._parts else _empty_counts(self.n, self.vocab_size)
            self._parts = []
            yield NGramCounts(out.n, out.vocab_size, out.contexts, out.indptr, out.next_token, out.count, n_tokens)
            return
        if self._parts:
            self._spill()
        assert self.spill_dir is not None and self._bounds is not None
        try:
            for b in range(len(self._bounds) - 1):
                parts = []
                for path in sorted(self.spill_dir.glob(f"bucket{b:03d}-*.npy")):
                    parts.append(_load_spill(path, self.n, self.vocab_size))
                    path.unlink()
                if parts:
                    out = merge_counts(parts)
                    del parts
                    yield NGramCounts(out.n, out.vocab_size, out.contexts, out.indptr, out.next_token, out.count, n_tokens)
        finally:
            shutil.rmtree(self.spill_dir, ignore_errors=True)

    def finish(self) -> NGramCounts:
        """Count what is buffered and return the merged table of the whole stream."""
        n_tokens_pieces = list(self.finish_buckets())
        return concat_disjoint(n_tokens_pieces, self.n, self.vocab_size, self.n_tokens)


def concat_disjoint(parts: Sequence[NGramCounts], n: int, vocab_size: int, n_tokens: int) -> NGramCounts:
    """Stack tables whose context sets are disjoint (e.g. buckets) without re-counting."""
    parts = [p for p in parts if p.n_ngrams]
    if not parts:
        return _empty_counts(n, vocab_size, n_tokens)
    offsets = np.cumsum([0] + [p.n_ngrams for p in parts])
    indptr = np.concatenate([parts[0].indptr[:1]] + [p.indptr[1:] + off for p, off in zip(parts, offsets)])
    return NGramCounts(
        n,
        vocab_size,
        np.concatenate([p.contexts for p in parts]),
        indptr.astype(np.int64),
        np.concatenate([p.next_token for p in parts]),
        np.concatenate([p.count for p in parts]),
        n_tokens,
    )


def count_stream(pieces: Iterable[np.ndarray | Sequence[int]], n: int, vocab_size: int, **counter_kw: object) -> NGramCounts:
    """Count the n-grams of the concatenation of ``pieces`` (see :class:`NGramCounter`)."""
    counter = NGramCounter(n, vocab_size, **counter_kw)  # type: ignore[arg-type]
    for piece in pieces:
        counter.add(piece)
    return counter.finish()


@dataclass(frozen=True)
class NextTokenMatrix:
    """P (rows = kept contexts, columns = observed next tokens) and what was kept.

    ``matrix``: scipy CSR float64 (C_kept x V_obs); ``columns``: vocabulary id
    of each column (the observed next tokens; every other column of the full
    C x V matrix is zero, so dropping them changes no singular value);
    ``rows``: index into ``NGramCounts.contexts`` of each kept context;
    ``context_counts``: N(c) of each kept row.
    """

    matrix: sp.csr_matrix
    columns: np.ndarray
    rows: np.ndarray
    context_counts: np.ndarray
    n_contexts_observed: int
    n_ngrams_kept: int
    n_occurrences_kept: int
    row_weight: str

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))


def select_contexts(
    context_counts: np.ndarray,
    min_count: int = 1,
    max_contexts: int | None = None,
    selection: ContextSelection = "frequent",
    seed: int = 0,
) -> np.ndarray:
    """Sorted indices of the contexts kept: N(c) >= min_count, then at most ``max_contexts`` of them.

    ``frequent`` keeps the contexts with the largest N(c) (ties: first in table
    order); ``random`` keeps a uniform random subset drawn with
    ``numpy.random.default_rng(seed)``.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if selection not in CONTEXT_SELECTIONS:
        raise ValueError(f"selection must be one of {CONTEXT_SELECTIONS}, got {selection!r}")
    keep = np.nonzero(np.asarray(context_counts) >= min_count)[0]
    if max_contexts is not None and len(keep) > max_contexts:
        if selection == "frequent":
            order = np.argsort(-np.asarray(context_counts)[keep], kind="stable")[:max_contexts]
            keep = np.sort(keep[order])
        else:
            keep = np.sort(np.random.default_rng(seed).choice(keep, size=max_contexts, replace=False))
    return keep


def next_token_matrix(
    counts: NGramCounts,
    min_count: int = 1,
    max_contexts: int | None = None,
    selection: ContextSelection = "frequent",
    seed: int = 0,
    row_weight: RowWeight = "uniform",
) -> NextTokenMatrix:
    """P from the counts: P[c, w] = N(c, w) / N(c) (uniform), times sqrt(N(c)/N) (frequency).

    Rows: the contexts chosen by :func:`select_contexts`; columns: the observed
    next tokens of the kept rows.
    """
    if row_weight not in ROW_WEIGHTS:
        raise ValueError(f"row_weight must be one of {ROW_WEIGHTS}, got {row_weight!r}")
    all_counts = counts.context_counts()
    keep = select_contexts(all_counts, min_count, max_contexts, selection, seed)
    kept = _select_contexts(counts, keep) if len(keep) < counts.n_contexts else counts
    ctx_counts = all_counts[keep].astype(np.float64)
    if counts.vocab_size <= _LOOKUP_MAX_VOCAB:  # a table over the vocabulary: linear, no sort
        present = np.zeros(counts.vocab_size, dtype=bool)
        present[kept.next_token] = True
        columns = np.flatnonzero(present)
        col_index = (np.cumsum(present) - 1)[kept.next_token]
        del present
    else:
        columns, col_index = np.unique(kept.next_token, return_inverse=True)
    lengths = np.diff(kept.indptr)
    row_scale = 1.0 / ctx_counts
    if row_weight == "frequency":
        row_scale = row_scale * np.sqrt(ctx_counts / max(ctx_counts.sum(), 1.0))
    data = kept.count.astype(np.float64) * np.repeat(row_scale, lengths)
    matrix = sp.csr_matrix((data, col_index.ravel().astype(np.int64), kept.indptr.copy()), shape=(len(keep), len(columns)))
    return NextTokenMatrix(
        matrix=matrix,
        columns=columns,
        rows=keep,
        context_counts=ctx_counts.astype(np.int64),
        n_contexts_observed=counts.n_contexts,
        n_ngrams_kept=kept.n_ngrams,
        n_occurrences_kept=int(kept.count.sum()),
        row_weight=row_weight,
    )


@dataclass(frozen=True)
class SamplingNoise:
    """How much of |P|_F^2 is sampling noise, under a multinomial model of each row.

    Each kept row is the empirical distribution of N(c) draws from the context's true
    next-token distribution p_c, times a row scale a_c (1 for uniform rows,
    sqrt(N(c)/N) for frequency rows). Then E|P_c - a_c p_c|^2 = a_c^2 (1 - |p_c|^2) / N(c),
    and for N(c) >= 2 the collision rate q_c = sum_w N(c,w)(N(c,w)-1) / (N(c)(N(c)-1))
    = (N(c) S_c - 1)/(N(c) - 1), S_c = |P_c|^2 / a_c^2, is an unbiased estimate of |p_c|^2.
    Rows seen once (one draw) cannot estimate |p_c|^2: their noise a_c^2 (1 - |p_c|^2)
    lies in [0, a_c^2]; ``energy`` takes |p_c|^2 as the mean q of the rows seen twice,
    ``energy_low`` / ``energy_high`` take 0 and a_c^2 (a bracket).

    ``floor`` = sqrt(energy) / |P|_F: W-error(d) cannot be told from sampling noise once
    it is at or below the floor (past the true rank r, the tail sum_{i>r} s_i^2 is noise
    energy). ``floor_low`` / ``floor_high``: the same from the bracket.
    """

    energy: float
    energy_low: float
    energy_high: float
    frobenius_norm: float
    floor: float
    floor_low: float
    floor_high: float
    one_hot_fraction: float  # rows with a single non-zero
    singleton_fraction: float  # rows of contexts seen once (N(c) = 1)
    singleton_collision: float  # the |p|^2 assumed for them (mean q of N(c) = 2 rows)

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def sampling_noise(p: NextTokenMatrix) -> SamplingNoise:
    """The multinomial sampling-noise estimate of P (see :class:`SamplingNoise`)."""
    m = p.matrix
    n_c = p.context_counts.astype(np.float64)
    row_sq = np.asarray(m.multiply(m).sum(axis=1)).ravel()
    frob_sq = float(row_sq.sum())
    if p.row_weight == "frequency":
        scale_sq = n_c / max(float(n_c.sum()), 1.0)
    else:
        scale_sq = np.ones_like(n_c)
    s = row_sq / np.where(scale_sq > 0, scale_sq, 1.0)
    many = n_c >= 2
    q = np.zeros_like(n_c)
    q[many] = np.clip((n_c[many] * s[many] - 1.0) / (n_c[many] - 1.0), 0.0, 1.0)
    noise_many = float((scale_sq[many] * (1.0 - q[many]) / n_c[many]).sum())
    twice = n_c == 2
    collision = float(q[twice].mean()) if twice.any() else (float(q[many].mean()) if many.any() else 0.0)
    once_scale = float(scale_sq[~many].sum())
    energy = noise_many + once_scale * (1.0 - collision)
    low, high = noise_many, noise_many + once_scale
    frob = float(np.sqrt(frob_sq))

    def floor(e: float) -> float:
        return float(min(1.0, np.sqrt(max(e, 0.0) / frob_sq))) if frob_sq > 0 else 0.0

    n_rows = max(m.shape[0], 1)
    return SamplingNoise(
        energy=energy,
        energy_low=low,
        energy_high=high,
        frobenius_norm=frob,
        floor=floor(energy),
        floor_low=floor(low),
        floor_high=floor(high),
        one_hot_fraction=float((np.diff(m.indptr) == 1).sum() / n_rows),
        singleton_fraction=float((~many).sum() / n_rows),
        singleton_collision=collision,
    )


def noise_floor_dimension(w_error: np.ndarray, floor: float) -> int | None:
    """Smallest d with W-error(d) <= floor: past it the curve is within sampling noise (None if not reached)."""
    hits = np.nonzero(np.asarray(w_error) <= floor)[0]
    return int(hits[0]) if len(hits) else None
