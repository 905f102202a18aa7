"""n-gram counting and the next-token matrix P against brute force (collections.Counter)."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmsat.measure.ngram import (
    NGramCounts,
    count_ngrams,
    count_stream,
    lexicographic_keys,
    merge_counts,
    next_token_matrix,
    select_contexts,
)


def brute_force(tokens: list[int], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


# Small vocabularies pack into one 64-bit key; 2**20 and 2**31 with n >= 4 overflow it and use the rank path.
vocabs = st.sampled_from([2, 3, 7, 50257, 2**20, 2**31])


@st.composite
def streams(draw):
    vocab = draw(vocabs)
    n = draw(st.integers(2, 6))
    alphabet = draw(st.integers(1, min(vocab, 6)))
    # Few distinct ids spread over the whole id range, so contexts repeat and large ids are exercised.
    ids = draw(st.lists(st.integers(0, vocab - 1), min_size=alphabet, max_size=alphabet, unique=True))
    picks = draw(st.lists(st.integers(0, alphabet - 1), min_size=0, max_size=300))
    return vocab, n, [ids[i] for i in picks]


@settings(max_examples=150, deadline=None)
@given(streams())
def test_count_ngrams_equals_counter(case):
    vocab, n, tokens = case
    counts = count_ngrams(np.array(tokens, dtype=np.int64), n, vocab)
    expected = brute_force(tokens, n)
    assert counts.as_dict() == dict(expected)
    assert counts.n_ngrams == len(expected)
    assert counts.n_occurrences == max(0, len(tokens) - n + 1)
    assert counts.n_contexts == len({k[:-1] for k in expected})
    assert counts.n_tokens == len(tokens)
    # Each context's next tokens are increasing and its N(c) is the sum over them.
    ctx_counts = Counter()
    for k, v in expected.items():
        ctx_counts[k[:-1]] += v
    assert dict(zip(map(tuple, counts.contexts.tolist()), counts.context_counts().tolist())) == dict(ctx_counts)
    for i in range(counts.n_contexts):
        nxt = counts.next_token[counts.indptr[i] : counts.indptr[i + 1]]
        assert np.all(np.diff(nxt) > 0)


@settings(max_examples=80, deadline=None)
@given(streams(), st.integers(1, 12), st.integers(6, 60), st.integers(1, 40), st.booleans())
def test_sharded_counting_and_spill_merge_equal_counter(tmp_path_factory, case, n_pieces, shard_tokens, max_rows, spill):
    """Counting in shards (n-1 tokens of overlap), merging in memory or via disk buckets == one Counter."""
    vocab, n, tokens = case
    shard_tokens = max(shard_tokens, n)
    spill_dir = tmp_path_factory.mktemp("spill") / "parts" if spill else None
    pieces = np.array_split(np.array(tokens, dtype=np.int64), n_pieces)
    counts = count_stream(pieces, n, vocab, shard_tokens=shard_tokens, max_rows_in_memory=max_rows, spill_dir=spill_dir, n_buckets=3)
    assert counts.as_dict() == dict(brute_force(tokens, n))
    assert counts.n_tokens == len(tokens)
    if spill_dir is not None:
        assert not spill_dir.exists()  # the spilled parts are removed once merged


@settings(max_examples=60, deadline=None)
@given(streams(), streams())
def test_merge_counts_adds_counters(a, b):
    vocab, n, ta = a
    _, _, tb = b
    tb = [t % vocab for t in tb]
    merged = merge_counts([count_ngrams(np.array(ta), n, vocab), count_ngrams(np.array(tb), n, vocab)])
    assert merged.as_dict() == dict(brute_force(ta, n) + brute_force(tb, n))
    assert merged.n_tokens == len(ta) + len(tb)


@settings(max_examples=80, deadline=None)
@given(vocabs, st.integers(1, 6), st.integers(1, 50), st.randoms(use_true_random=False))
def test_lexicographic_keys_preserve_row_order(vocab, width, n_rows, rnd):
    rows = np.array([[rnd.randrange(min(vocab, 4)) * (vocab // 4 or 1) for _ in range(width)] for _ in range(n_rows)])
    rows = np.clip(rows, 0, vocab - 1)
    keys = lexicographic_keys(rows, vocab)
    as_tuples = [tuple(r) for r in rows.tolist()]
    for i in range(n_rows):
        for j in range(n_rows):
            assert (keys[i] < keys[j]) == (as_tuples[i] < as_tuples[j])
            assert (keys[i] == keys[j]) == (as_tuples[i] == as_tuples[j])


def test_counts_round_trip_through_arrays():
    rng = np.random.default_rng(0)
    counts = count_ngrams(rng.integers(0, 9, 500), 4, 9)
    again = NGramCounts.from_arrays(counts.arrays())
    assert again.as_dict() == counts.as_dict()
    assert (again.n, again.vocab_size, again.n_tokens) == (4, 9, 500)


def test_count_ngrams_rejects_out_of_range_ids_and_small_n():
    with pytest.raises(ValueError, match="token ids"):
        count_ngrams(np.array([0, 5, 1]), 2, 5)
    with pytest.raises(ValueError, match="n must be"):
        count_ngrams(np.array([0, 1, 1]), 1, 5)


def _brute_matrix(tokens: list[int], n: int) -> dict[tuple, dict[int, float]]:
    rows: dict[tuple, Counter] = {}
    for k, v in brute_force(tokens, n).items():
        rows.setdefault(k[:-1], Counter())[k[-1]] += v
    return {c: {w: v / sum(cnt.values()) for w, v in cnt.items()} for c, cnt in rows.items()}


@settings(max_examples=60, deadline=None)
@given(streams(), st.integers(1, 4))
def test_uniform_rows_are_empirical_next_token_distributions(case, min_count):
    vocab, n, tokens = case
    counts = count_ngrams(np.array(tokens, dtype=np.int64), n, vocab)
    if counts.n_ngrams == 0:
        return
    p = next_token_matrix(counts, min_count=min_count)
    expected = _brute_matrix(tokens, n)
    ctx_total = Counter()
    for k, v in brute_force(tokens, n).items():
        ctx_total[k[:-1]] += v
    kept = {c for c, t in ctx_total.items() if t >= min_count}
    assert p.shape[0] == len(kept)
    dense = p.matrix.toarray()
    for row, ctx_index in enumerate(p.rows):
        ctx = tuple(counts.contexts[ctx_index].tolist())
        assert ctx in kept
        got = {int(p.columns[j]): dense[row, j] for j in np.nonzero(dense[row])[0]}
        assert got.keys() == expected[ctx].keys()
        for w, v in expected[ctx].items():
            assert got[w] == pytest.approx(v, rel=1e-12)
    # Columns are exactly the next tokens observed in kept rows.
    observed = {k[-1] for k in brute_force(tokens, n) if k[:-1] in kept}
    assert set(p.columns.tolist()) == observed


def test_frequency_rows_weight_squared_error_by_context_frequency():
    """Frequency weighting: |P_c|^2 = p(c) |uniform row|^2, p(c) = N(c)/N."""
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 5, 2000)
    counts = count_ngrams(tokens, 3, 5)
    uni = next_token_matrix(counts, row_weight="uniform").matrix.toarray()
    freq = next_token_matrix(counts, row_weight="frequency").matrix.toarray()
    nc = counts.context_counts()
    p_c = nc / nc.sum()
    np.testing.assert_allclose((freq**2).sum(1), p_c * (uni**2).sum(1), rtol=1e-12)
    np.testing.assert_allclose(freq / np.sqrt(p_c)[:, None], uni, rtol=1e-12)


def test_max_contexts_keeps_most_frequent_or_a_seeded_random_subset():
    counts_per_context = np.array([5, 1, 9, 9, 2, 7, 1, 3])
    assert select_contexts(counts_per_context, max_contexts=3).tolist() == [2, 3, 5]
    assert select_contexts(counts_per_context, min_count=3).tolist() == [0, 2, 3, 5, 7]
    a = select_contexts(counts_per_context, max_contexts=4, selection="random", seed=1)
    b = select_contexts(counts_per_context, max_contexts=4, selection="random", seed=1)
    assert a.tolist() == b.tolist() and len(a) == 4 and len(set(a.tolist())) == 4
    expected = np.sort(np.random.default_rng(1).choice(np.arange(8), size=4, replace=False))
    assert a.tolist() == expected.tolist()


def _assert_same_table(a: NGramCounts, b: NGramCounts) -> None:
    assert (a.n, a.vocab_size, a.n_tokens) == (b.n, b.vocab_size, b.n_tokens)
    for field in ("contexts", "indptr", "next_token", "count"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape, field
        np.testing.assert_array_equal(x, y, err_msg=field)


def _zipf_ids(n_tokens: int, vocab: int, seed: int) -> np.ndarray:
    p = 1.0 / np.arange(1, min(vocab, 2000) + 1) ** 1.1
    ids = np.random.default_rng(seed).choice(len(p), size=n_tokens, p=p / p.sum())
    return (ids * (vocab // len(p))).astype(
        np.int64
    )  # spread over the id range (large ids exercised)


@pytest.mark.parametrize(
    ("vocab", "n"), [(50257, 5), (70000, 4), (2**20, 3), (2**31, 4), (7, 6)]
)
def test_compiled_and_numpy_counters_give_identical_tables(monkeypatch, vocab, n):
    """The numba kernels (scatter, per-group radix sort, table fill, pairwise merge) == the numpy route, bit for bit."""
    from lmsat.measure import ngram

    if not ngram._kernels.HAVE_NUMBA:
        pytest.skip(
            "numba not installed (pip install lmsat[fast]): only the numpy route exists"
        )
    ids = _zipf_ids(60_000, vocab, seed=vocab % 97)
    shards = [ids[i : i + 20_000 + n - 1] for i in range(0, ids.size, 20_000)]
    tables = {}
    for use in (True, False):
        monkeypatch.setattr(ngram, "USE_NUMBA", use)
        monkeypatch.setattr(ngram, "NUMBA_MIN_ROWS", 0)
        parts = [count_ngrams(s, n, vocab) for s in shards]
        tables[use] = (count_ngrams(ids, n, vocab), parts, merge_counts(parts))
    _assert_same_table(tables[True][0], tables[False][0])
    for a, b in zip(tables[True][1], tables[False][1]):
        _assert_same_table(a, b)
    _assert_same_table(tables[True][2], tables[False][2])
    whole = tables[True][0]
    merged = tables[True][
        2
    ]  # shards overlap by n-1 tokens, so the merge is the whole stream's table
    np.testing.assert_array_equal(merged.ngram_rows(), whole.ngram_rows())
    np.testing.assert_array_equal(merged.count, whole.count)


@pytest.mark.parametrize("use_numba", [True, False])
def test_spilled_range_buckets_equal_in_memory_count(tmp_path, monkeypatch, use_numba):
    """A multi-shard stream spilled to disk as first-token ranges: the buckets come in context order, are
    disjoint, and together equal count_ngrams of the whole stream; the spill files are removed."""
    from lmsat.measure import ngram
    from lmsat.measure.ngram import NGramCounter, concat_disjoint

    if use_numba and not ngram._kernels.HAVE_NUMBA:
        pytest.skip("numba not installed")
    monkeypatch.setattr(ngram, "USE_NUMBA", use_numba)
    monkeypatch.setattr(ngram, "NUMBA_MIN_ROWS", 0)
    vocab, n = 50257, 5
    ids = _zipf_ids(80_000, vocab, seed=5)
    expected = count_ngrams(ids, n, vocab)
    counter = NGramCounter(
        n,
        vocab,
        shard_tokens=15_000,
        max_rows_in_memory=20_000,
        spill_dir=tmp_path / "spill",
        n_buckets=4,
    )
    for piece in np.array_split(ids, 13):
        counter.add(piece)
    pieces = list(counter.finish_buckets())
    assert counter.n_shards >= 5 and len(pieces) >= 3
    firsts = [p.contexts[:, 0].astype(np.int64) for p in pieces]
    assert all(
        a.max() < b.min() for a, b in itertools.pairwise(firsts)
    )  # disjoint ranges, in order
    got = concat_disjoint(pieces, n, vocab, counter.n_tokens)
    np.testing.assert_array_equal(got.ngram_rows(), expected.ngram_rows())
    np.testing.assert_array_equal(got.count, expected.count)
    assert got.n_tokens == expected.n_tokens == ids.size
    assert not (tmp_path / "spill").exists()


@settings(max_examples=60, deadline=None)
@given(streams(), streams())
def test_compiled_route_equals_counter_on_small_streams(a, b):
    """Edge cases of the numba kernels (empty and one-row groups, short streams) against collections.Counter."""
    from lmsat.measure import ngram

    if not ngram._kernels.HAVE_NUMBA:
        return
    vocab, n, ta = a
    tb = [t % vocab for t in b[2]]
    saved = ngram.NUMBA_MIN_ROWS
    ngram.NUMBA_MIN_ROWS = 0
    try:
        ca, cb = count_ngrams(np.array(ta, dtype=np.int64), n, vocab), count_ngrams(np.array(tb, dtype=np.int64), n, vocab)
        merged = merge_counts([ca, cb])
    finally:
        ngram.NUMBA_MIN_ROWS = saved
    assert ca.as_dict() == dict(brute_force(ta, n))
    assert merged.as_dict() == dict(brute_force(ta, n) + brute_force(tb, n))
