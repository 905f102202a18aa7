"""Compiled (numba) kernels of the n-gram counter in :mod:`lmsat.measure.ngram` (issue 15 item 3).

Optional: installed with ``pip install lmsat[fast]``. Without numba, :data:`HAVE_NUMBA` is False and
the counter uses its numpy route, which gives identical tables (tested). Each kernel is one
sequential pass (or two: sizes, then fill) over arrays the numpy route would sweep several times:

* :func:`scatter_by_first`: counting sort of the windows by first token, the other n-1 ids packed by
  shifts into one uint64 on the way (replaces a stable radix argsort, an int64 order array and a
  random gather);
* :func:`table_sizes` / :func:`table_fill`: the count table of rows sorted by (first token, rest key);
* :func:`merge_two`: the sum of two count tables, both sorted lexicographically by (context, next
  token), as a linear merge of sorted runs (exact int64 counts).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from types import SimpleNamespace

import numpy as np

# Whether numba is installed; it is imported (and the kernels compiled, or loaded from numba's
# on-disk cache) only on first use, so importing lmsat stays fast.
HAVE_NUMBA: bool = importlib.util.find_spec("numba") is not None
_radix_sort_jit = None  # set by kernels()


@cache
def kernels() -> SimpleNamespace:
    """The compiled kernels (numba.njit, cached on disk): scatter_by_first, sort_groups_u64, table_sizes, table_fill, merge_two."""
    import numba

    def jit(fn):  # type: ignore[no-untyped-def]
        return numba.njit(cache=True, nogil=True, boundscheck=False)(fn)

    global _radix_sort_jit  # called by _sort_groups_u64: numba resolves it as a global at compile time
    _radix_sort_jit = jit(_radix_sort)
    sort_groups = jit(_sort_groups_u64)
    return SimpleNamespace(
        scatter_by_first=jit(_scatter_by_first),
        sort_groups_u64=sort_groups,
        table_sizes=jit(_table_sizes_ctx),
        table_fill=jit(_table_fill),
        merge_two=jit(_merge_two),
    )


def _scatter_by_first(tokens, n, bits, rest_mask, group_start):  # type: ignore[no-untyped-def]
    """rest keys (t_2..t_n packed, ``bits`` per id) of every window, grouped by first token t_1.

    ``group_start[v]``: where the windows with first token v begin (exclusive cumsum of the counts);
    within a group the windows keep their stream order (stable).
    """
    n_win = tokens.size - n + 1
    out = np.empty(n_win, dtype=np.uint64)
    pos = group_start.copy()
    b = np.uint64(bits)
    r = np.uint64(0)
    for j in range(1, n - 1):
        r = (r << b) | np.uint64(tokens[j])
    for i in range(n_win):
        r = ((r << b) | np.uint64(tokens[i + n - 1])) & rest_mask
        v = tokens[i]
        out[pos[v]] = r
        pos[v] += 1
    return out


def _table_fill(
    rest, group_end, count, weighted, bits, contexts, indptr, next_token, out_count
):  # type: ignore[no-untyped-def]
    """Fill a count table (arrays sized by :func:`_table_sizes_ctx`) from rows sorted by (first, rest).

    ``next_token`` may be ``rest`` itself viewed as int64 (written at k <= i after rest[i] is read)."""
    b = np.uint64(bits)
    id_mask = np.uint64((1 << bits) - 1)
    width = contexts.shape[1]
    k = -1
    c = -1
    start = 0
    prev = np.uint64(0)
    for v in range(group_end.size):
        end = group_end[v]
        prev_ctx = np.uint64(0)
        for i in range(start, end):
            r = rest[
                i
            ]  # read before next_token[k <= i] is written: next_token may share rest's memory
            w = np.int64(count[i]) if weighted else np.int64(1)
            new = i == start or r != prev
            prev = r
            if new:
                k += 1
                next_token[k] = np.int64(r & id_mask)
                out_count[k] = w
                ctx = r >> b
                if i == start or ctx != prev_ctx:
                    c += 1
                    indptr[c] = k
                    contexts[c, 0] = v
                    x = ctx
                    for j in range(width - 1, 0, -1):
                        contexts[c, j] = x & id_mask
                        x = x >> b
                    prev_ctx = ctx
            else:
                out_count[k] += w
        start = end
    indptr[c + 1] = k + 1


def _table_sizes_ctx(rest, group_end, bits):  # type: ignore[no-untyped-def]
    """(K distinct n-grams, C distinct contexts) of rows sorted by (first token, rest key)."""
    b = np.uint64(bits)
    n_k = 0
    n_c = 0
    start = 0
    for v in range(group_end.size):
        end = group_end[v]
        prev_ctx = np.uint64(0)
        for i in range(start, end):
            r = rest[i]
            if i == start or r != rest[i - 1]:
                n_k += 1
                ctx = r >> b
                if i == start or ctx != prev_ctx:
                    n_c += 1
                    prev_ctx = ctx
        start = end
    return n_k, n_c


def _merge_two(
    ctx_a,
    ind_a,
    next_a,
    cnt_a,
    ctx_b,
    ind_b,
    next_b,
    cnt_b,
    ctx_o,
    ind_o,
    next_o,
    cnt_o,
):  # type: ignore[no-untyped-def]
    """Merge two count tables sorted by (context, next token) into the preallocated outputs.

    Outputs must hold C_a + C_b contexts and K_a + K_b n-grams (upper bounds); returns the
    used (C, K). Equal n-grams have their counts summed.
    """
    n_ca = ctx_a.shape[0]
    n_cb = ctx_b.shape[0]
    width = ctx_a.shape[1]
    ia = 0
    ib = 0
    c = 0
    k = 0
    ind_o[0] = 0
    while ia < n_ca or ib < n_cb:
        cmp = 0
        if ia == n_ca:
            cmp = 1
        elif ib == n_cb:
            cmp = -1
        else:
            for j in range(width):
                xa = ctx_a[ia, j]
                xb = ctx_b[ib, j]
                if xa < xb:
                    cmp = -1
                    break
                if xa > xb:
                    cmp = 1
                    break
        if cmp < 0:
            for j in range(width):
                ctx_o[c, j] = ctx_a[ia, j]
            for q in range(ind_a[ia], ind_a[ia + 1]):
                next_o[k] = next_a[q]
                cnt_o[k] = cnt_a[q]
                k += 1
            ia += 1
        elif cmp > 0:
            for j in range(width):
                ctx_o[c, j] = ctx_b[ib, j]
            for q in range(ind_b[ib], ind_b[ib + 1]):
                next_o[k] = next_b[q]
                cnt_o[k] = cnt_b[q]
                k += 1
            ib += 1
        else:
            for j in range(width):
                ctx_o[c, j] = ctx_a[ia, j]
            qa = ind_a[ia]
            ea = ind_a[ia + 1]
            qb = ind_b[ib]
            eb = ind_b[ib + 1]
            while qa < ea or qb < eb:
                if qb == eb or (qa < ea and next_a[qa] < next_b[qb]):
                    next_o[k] = next_a[qa]
                    cnt_o[k] = cnt_a[qa]
                    qa += 1
                elif qa == ea or next_b[qb] < next_a[qa]:
                    next_o[k] = next_b[qb]
                    cnt_o[k] = cnt_b[qb]
                    qb += 1
                else:
                    next_o[k] = next_a[qa]
                    cnt_o[k] = cnt_a[qa] + cnt_b[qb]
                    qa += 1
                    qb += 1
                k += 1
            ia += 1
            ib += 1
        c += 1
        ind_o[c] = k
    return c, k


def _radix_sort(a, tmp):  # type: ignore[no-untyped-def]
    """Sort uint64 ``a`` in place: LSD radix over 11-bit digits (one histogram pass; constant digits skipped)."""
    size = a.size
    n_pass = 6
    hist = np.zeros((n_pass, 2048), dtype=np.int64)
    for i in range(size):
        x = a[i]
        for p in range(n_pass):
            hist[p, (x >> np.uint64(11 * p)) & np.uint64(2047)] += 1
    src = a
    dst = tmp[:size]
    swapped = False
    for p in range(n_pass):
        sh = np.uint64(11 * p)
        if hist[p, (a[0] >> sh) & np.uint64(2047)] == size:
            continue
        total = 0
        for d in range(2048):
            c = hist[p, d]
            hist[p, d] = total
            total += c
        for i in range(size):
            x = src[i]
            d = (x >> sh) & np.uint64(2047)
            dst[hist[p, d]] = x
            hist[p, d] += 1
        src, dst = dst, src
        swapped = not swapped
    if swapped:
        a[:] = src


def _sort_groups_u64(rest, group_end, max_group):  # type: ignore[no-untyped-def]
    """Sort ``rest`` in place within each group ``group_end[v-1]:group_end[v]`` (same result as np.sort per group)."""
    tmp = np.empty(max_group, dtype=np.uint64)
    start = 0
    for v in range(group_end.size):
        end = group_end[v]
        size = end - start
        if size > 4096:
            _radix_sort_jit(rest[start:end], tmp)
        elif size > 32:
            rest[start:end].sort()
        elif size > 1:
            for i in range(start + 1, end):  # insertion sort
                x = rest[i]
                j = i - 1
                while j >= start and rest[j] > x:
                    rest[j + 1] = rest[j]
                    j -= 1
                rest[j + 1] = x
        start = end
