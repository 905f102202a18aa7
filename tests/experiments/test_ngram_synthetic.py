"""Exact answers on corpora generated from a known n-gram source, through `lmsat ngram-rank`.

The source: n = 3, V = 10 words; the next-word distribution of every context
(a, b) is row (a, b) of Q = A B, A (100 x R) and B (R x V) row-stochastic, so
rank Q = R. A text of T words is sampled from it and written as "w3 w7 ...";
a word-level tokenizer maps word wi to id i. With P the empirical matrix and
Q_obs the rows of Q for the observed contexts (rank <= R):

* Eckart-Young: W-error_P(R) <= |P - Q_obs|_F / |P|_F (a rank-R matrix at that distance exists);
* Weyl: s_R(P) >= s_R(Q_obs) - |P - Q_obs|_2, so W-error_P(R-1) >= that / |P|_F > 0.

"W-error(R) = 0 up to sampling noise" is the first bound: the noise |P - Q_obs|_F
shrinks like 1/sqrt(T).

Both bounds are computed here with numpy from the sampled stream, independently of lmsat.
"""

from __future__ import annotations

import numpy as np
import pytest

from lmsat.store import Store

V, R, N_ORDER, T = 10, 3, 3, 120_000


def sample_stream(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.dirichlet(np.full(R, 0.3), size=V * V)
    b = rng.dirichlet(np.full(V, 0.5), size=R)
    q = a @ b
    cum = np.cumsum(q, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(T)
    out = np.empty(T, dtype=np.int64)
    out[0], out[1] = 0, 1
    for i in range(2, T):  # a Markov chain: each token depends on the previous two
        out[i] = np.searchsorted(cum[out[i - 2] * V + out[i - 1]], u[i], side="right")
    return out, q


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("synthetic")
    stream, q = sample_stream()
    words = [f"w{i}" for i in stream]
    text = "\n".join(" ".join(words[i : i + 20]) for i in range(0, len(words), 20)) + "\n"
    (root / "corpus").mkdir()
    (root / "corpus" / "source.txt").write_text(text)
    vocab = {f"w{i}": i for i in range(V)} | {"[UNK]": V}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(root / "wordtok")
    return root, stream, q


def empirical_matrix(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical P (observed contexts x V) and the context index of each row, from the raw stream."""
    counts = np.zeros((V * V, V))
    np.add.at(counts, (stream[:-2] * V + stream[1:-1], stream[2:]), 1)
    observed = np.nonzero(counts.sum(1))[0]
    return counts[observed] / counts[observed].sum(1, keepdims=True), observed


def test_rank_r_source_gives_w_error_zero_at_r_up_to_sampling_noise(synthetic, cli, tmp_path):
    root, stream, q = synthetic
    out = tmp_path / "run"
    res = cli("ngram-rank", "--tokenizer", root / "wordtok", "--data", root / "corpus", "--n", N_ORDER, "-o", out)
    assert res.code == 0, res.stderr
    assert "dimension" in res.stdout.lower() and "W-error" in res.stdout

    (rec,) = Store(out).records("ngram")
    s = rec.load_arrays()["singular_values"]
    curve = rec.load_arrays()["w_error"]

    p, observed = empirical_matrix(stream)
    q_obs = q[observed]
    assert np.linalg.matrix_rank(q_obs, tol=1e-10) == R
    # The measured spectrum is the spectrum of P computed independently.
    ref = np.linalg.svd(p, compute_uv=False)
    np.testing.assert_allclose(s, ref[: len(s)], rtol=1e-9, atol=1e-12)
    assert rec.results["frobenius_norm"] == pytest.approx(np.linalg.norm(p), rel=1e-12)
    assert rec.results["n_contexts"] == len(observed)
    assert rec.results["n_tokens"] == T and rec.results["vocab_size"] == V + 1

    fro = np.linalg.norm(p)
    noise_f = np.linalg.norm(p - q_obs) / fro
    noise_2 = np.linalg.norm(p - q_obs, 2)
    s_r_q = np.linalg.svd(q_obs, compute_uv=False)[R - 1]
    weyl = (s_r_q - noise_2) / fro
    assert curve[R] <= noise_f + 1e-12  # Eckart-Young upper bound: only sampling noise is left at d = R
    assert curve[R - 1] >= weyl - 1e-12  # Weyl lower bound: d = R - 1 is not enough
    # With this sample the two bounds are well separated (noise ~0.11, Weyl ~0.33), so the
    # reported dimension for W-error <= 0.2 must be exactly R.
    assert noise_f < 0.2 < weyl
    assert rec.results["dims_for_w_error"]["0.2"] == R
    assert (out / "figures" / "ngram_w_error.png").stat().st_size > 0
    assert (out / "ngram.csv").read_text().count("\n") == 2


def test_rerun_resumes_after_counting_and_reuses_the_record(synthetic, cli, tmp_path, monkeypatch):
    root, stream, _ = synthetic
    out = tmp_path / "run"
    args = ("ngram-rank", "-t", root / "wordtok", "-d", root / "corpus", "--n", N_ORDER, "-o", out)
    assert cli(*args).code == 0
    store = Store(out)
    (counts_rec,) = store.records("ngram_counts")
    (first,) = store.records("ngram")

    import lmsat.experiments.ngram as exp

    def no_counting(*a, **k):
        raise AssertionError("counted again although the counts were stored")

    monkeypatch.setattr(exp, "count_corpus", no_counting)
    # A different option of the spectrum stage reuses the stored counts.
    res = cli(*args, "--min-count", 2)
    assert res.code == 0, res.stderr
    records = {r.key: r for r in store.records("ngram")}
    assert set(records) == {first.key, first.key + "|min_count=2"}
    counts = np.bincount(stream[:-2] * V + stream[1:-1], minlength=V * V)
    assert records[first.key + "|min_count=2"].results["n_contexts"] == int((counts >= 2).sum())
    # Deleting the final record and re-running recomputes it from the stored counts.
    store.delete("ngram", first.key)
    assert cli(*args).code == 0
    again = store.get("ngram", first.key)
    np.testing.assert_allclose(again.load_arrays()["singular_values"], first.load_arrays()["singular_values"])
    # And a plain re-run returns the stored record untouched.
    stamp = again.path.stat().st_mtime_ns
    assert cli(*args).code == 0
    assert again.path.stat().st_mtime_ns == stamp


def test_frequency_row_weight_equals_weighted_dense_svd(synthetic, cli, tmp_path):
    root, stream, _ = synthetic
    out = tmp_path / "run"
    res = cli("ngram-rank", "-t", root / "wordtok", "-d", root / "corpus", "--n", N_ORDER, "--row-weight", "frequency", "-o", out)
    assert res.code == 0, res.stderr
    (rec,) = Store(out).records("ngram")
    p, observed = empirical_matrix(stream)
    nc = np.bincount(stream[:-2] * V + stream[1:-1], minlength=V * V)[observed]
    weighted = p * np.sqrt(nc / nc.sum())[:, None]
    np.testing.assert_allclose(rec.load_arrays()["singular_values"], np.linalg.svd(weighted, compute_uv=False), rtol=1e-9, atol=1e-13)
    assert rec.key.endswith("|rows=frequency")


def test_max_contexts_and_top_k_through_the_cli(synthetic, cli, tmp_path):
    root, stream, _ = synthetic
    out = tmp_path / "run"
    base = ("ngram-rank", "-t", root / "wordtok", "-d", root / "corpus", "--n", N_ORDER, "-o", out)
    res = cli(*base, "--max-contexts", 20, "--top-k", 2)
    assert res.code == 0, res.stderr
    (rec,) = Store(out).records("ngram")
    assert rec.key.endswith("|max_contexts=20:frequent|top_k=2")
    # Independent: the 20 most frequent contexts' rows, dense SVD, top 2.
    p, observed = empirical_matrix(stream)
    nc = np.bincount(stream[:-2] * V + stream[1:-1], minlength=V * V)[observed]
    top = np.sort(np.argsort(-nc, kind="stable")[:20])
    ref = np.linalg.svd(p[top], compute_uv=False)
    s = rec.load_arrays()["singular_values"]
    np.testing.assert_allclose(s, ref[:2], rtol=1e-9)
    assert rec.results["n_contexts"] == 20 and not rec.results["complete"]
    assert rec.results["frobenius_norm"] == pytest.approx(np.linalg.norm(p[top]), rel=1e-12)
    # W-error(2) uses the exact |P|_F; thresholds beyond the 2 computed values are unknown.
    assert rec.load_arrays()["w_error"][2] == pytest.approx(np.sqrt((ref[2:] ** 2).sum()) / np.linalg.norm(ref), rel=1e-6)
    assert rec.results["dims_for_w_error"]["0.01"] is None
    assert "> 2" in res.stdout


def test_counting_in_small_shards_gives_the_same_counts(synthetic, cli, tmp_path):
    root, _, _ = synthetic
    base = ("ngram-rank", "-t", root / "wordtok", "-d", root / "corpus", "--n", N_ORDER, "--top-k", 3)
    assert cli(*base, "-o", tmp_path / "one").code == 0
    assert cli(*base, "--shard-tokens", 997, "-o", tmp_path / "many").code == 0  # 121 shards, merged
    (one,) = Store(tmp_path / "one").records("ngram_counts")
    (many,) = Store(tmp_path / "many").records("ngram_counts")
    a, b = one.load_arrays(), many.load_arrays()
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
