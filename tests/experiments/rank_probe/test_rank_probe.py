"""Rank probe against exact answers: synthetic data of known rank and entropy, schedules, splits, cache checks."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from lmsat.cli.parse import parse_ranks
from lmsat.errors import UserError
from lmsat.experiments.rank_probe import (
    KIND,
    ProbeSettings,
    dev_windows,
    evaluate_head,
    lr_factor,
    open_feature_cache,
    probe_rank,
    split_windows,
    train_head,
    write_feature_cache,
)
from lmsat.nn.heads import make_head
from lmsat.store import Store


def _synthetic_cache(folder, V, d, R, n_train, n_eval, rows, seed=0, dtype="float32"):
    """Features H ~ N(0, I) and targets y ~ softmax(H M^T) with rank(M) = R; also the exact entropies."""
    rng = np.random.default_rng(seed)
    M = (rng.standard_normal((V, R)) @ rng.standard_normal((R, d))) * (1.6 / math.sqrt(d))
    data = {}
    for split, n in (("train", n_train), ("eval", n_eval)):
        H = rng.standard_normal((n * rows, d))
        z = H @ M.T
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        y = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)
        entropy = -(p * np.log(np.clip(p, 1e-300, None))).sum(1)
        data[split] = (H.astype(np.float32), y.astype(np.int32), entropy)

    def blocks(split, first, n):
        H, y, _ = data[split]
        return H[first * rows : (first + n) * rows], y[first * rows : (first + n) * rows], None, None

    cache = write_feature_cache(folder, {"synthetic": seed}, {"train": n_train, "eval": n_eval}, d, V, rows, 16, blocks, dtype)
    return cache, data, M


@pytest.fixture
def one_thread():
    """Tiny matrices: a second torch thread only adds synchronisation (60x slower on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def known_rank(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_thread
    try:
        return _known_rank(tmp_path_factory)
    finally:
        torch.set_num_threads(before)


def _known_rank(tmp_path_factory):
    root = tmp_path_factory.mktemp("known_rank")
    V, d, R = 120, 24, 4
    cache, data, M = _synthetic_cache(root / "features", V, d, R, n_train=640, n_eval=160, rows=64)
    assert np.linalg.matrix_rank(M) == R
    settings = ProbeSettings(seq_len=65, lr_grid=(1e-2, 3e-2), search_steps=60, steps=400, batch_tokens=2048, init="gaussian")
    store = Store(root / "run")
    recs = {r: probe_rank(store, cache, "synthetic", r, settings, {"model_key": "synthetic"}, "cpu") for r in (2, 4, 8)}
    recs["full"] = probe_rank(store, cache, "synthetic", None, settings, {"model_key": "synthetic"}, "cpu")
    plain = replace(settings, full_rank_head="plain")
    recs["full-plain"] = probe_rank(store, cache, "synthetic", None, plain, {"model_key": "synthetic"}, "cpu")
    return recs, float(data["eval"][2].mean()), store, cache.train.n_rows


def test_probe_at_rank_of_the_data_reaches_its_exact_entropy(known_rank):
    """Held-out loss of a fitted head of rank >= R is the entropy plus estimation error.

    A well-specified maximum-likelihood fit of k parameters on n tokens has an
    expected excess log-loss of about k / (2 n) (41k tokens: 0.007 nats for r = 4,
    0.035 for the 2880-parameter plain full-rank head W); we allow twice that, plus 0.02
    for the sampling noise of the 10k held-out targets (std ~0.01).
    """
    recs, entropy, _, n_train = known_rank
    assert recs["full"].results["parametrization"] == "A B" and recs["full"].results["rank"] == 24
    assert recs["full-plain"].results["parametrization"] == "W" and recs["full-plain"].key.startswith("synthetic|full-plain|")
    for r in (4, 8, "full", "full-plain"):
        loss = recs[r].results["loss"]
        k = recs[r].results["n_parameters"]
        assert entropy - 0.02 < loss < entropy + 0.02 + k / n_train, (r, loss, entropy, k / n_train)


def test_probe_below_the_rank_of_the_data_stays_measurably_above_its_entropy(known_rank):
    recs, entropy, _, _ = known_rank
    gaps = {r: recs[r].results["loss"] - entropy for r in (2, 4, 8)}
    assert gaps[2] > 0.5, gaps  # measured: 0.92 nats
    assert gaps[2] > max(gaps[4], gaps[8]) + 0.4, gaps


def test_every_search_run_is_a_record_and_the_best_rate_is_chosen(known_rank):
    recs, _, store, _ = known_rank
    for r in (2, 4, 8):
        search = {rec.results["lr"]: rec.results["dev_loss"] for rec in store.records(KIND) if rec.results["stage"] == "search" and rec.inputs["rank"] == r}
        assert set(search) == {1e-2, 3e-2}
        assert recs[r].results["lr"] == min(search, key=search.get)
        assert recs[r].key == f"synthetic|r={r}|lr={recs[r].results['lr']:g}|final"


def test_lr_schedule_is_linear_warmup_then_cosine_to_the_floor():
    steps, warm = 100, 10
    f = [lr_factor(s, steps, 0.1, 0.1) for s in range(steps)]
    assert f[:warm] == pytest.approx([(s + 1) / warm for s in range(warm)])
    assert f[warm] == pytest.approx(1.0)
    mid = warm + (steps - warm) // 2
    assert f[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (mid - warm) / (steps - warm))))
    assert f[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert all(a >= b for a, b in zip(f[warm:], f[warm + 1 :]))
    assert lr_factor(0, 5, 0.0, 0.0) == 1.0


def test_train_and_heldout_windows_partition_the_sample():
    for n, k, seed in ((10, 3, 0), (97, 20, 5), (3, 1, 1)):
        train, held = split_windows(n, k, seed)
        assert len(held) == k and len(train) == n - k
        assert not set(train) & set(held)
        assert sorted(set(train) | set(held)) == list(range(n))
        fit, dev = dev_windows(len(train), 0.1, seed)
        assert not set(fit) & set(dev) and len(fit) + len(dev) == len(train) and len(dev) >= 1


def test_chunked_gradients_equal_one_big_batch(tmp_path, one_thread):
    """Accumulating over 7-token chunks changes nothing: the chunking only bounds memory."""
    cache, _, _ = _synthetic_cache(tmp_path / "f", 50, 12, 3, n_train=8, n_eval=2, rows=20)
    heads = []
    for chunk in (7, 0):
        head = make_head("low-rank", 50, 12, rank=3, seed=1)
        seen = []
        forward = head.forward
        head.forward = lambda h, _f=forward, _s=seen: (_s.append(len(h)), _f(h))[1]
        settings = ProbeSettings(seq_len=21, batch_tokens=80, steps=3, chunk_tokens=chunk, init="gaussian")
        train_head(head, cache.train, np.arange(8), 3, 1e-2, settings, "cpu", seed=3)
        heads.append(head)
        assert max(seen) == (7 if chunk else 80)
    assert torch.allclose(heads[0].A, heads[1].A, atol=1e-6) and torch.allclose(heads[0].B, heads[1].B, atol=1e-6)


def test_evaluation_equals_a_direct_computation(tmp_path, one_thread):
    cache, data, _ = _synthetic_cache(tmp_path / "f", 30, 8, 2, n_train=4, n_eval=3, rows=10)
    head = make_head("full-rank", 30, 8, seed=2)
    ev = evaluate_head(head, cache.eval, np.array([0, 2]), "cpu", chunk_tokens=3)
    H, y, _ = data["eval"]
    rows = np.r_[0:10, 20:30]
    z = H[rows].astype(np.float64) @ head.W.detach().double().numpy().T
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    per_token = -logp[np.arange(20), y[rows]]
    nll = per_token.mean()
    assert ev["nll"] == pytest.approx(per_token, rel=1e-5)
    assert ev["loss"] == pytest.approx(nll, rel=1e-5)
    assert ev["loss_se"] == pytest.approx(per_token.std() / math.sqrt(20), rel=1e-4)
    assert ev["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert ev["accuracy"] == pytest.approx(float((z.argmax(1) == y[rows]).mean()))
    assert ev["n_tokens"] == 20


def test_a_corrupted_cache_fails_its_checksum(tmp_path):
    cache, _, _ = _synthetic_cache(tmp_path / "f", 30, 8, 2, n_train=40, n_eval=4, rows=10, dtype="float16")
    assert open_feature_cache(cache.folder).train.n_seqs == 40
    with open(cache.folder / "train_h.npy", "r+b") as fh:
        fh.seek(-5, 2)
        byte = fh.read(1)
        fh.seek(-5, 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(UserError, match="corrupt.*train block 2"):
        open_feature_cache(cache.folder)


def test_float16_cache_rounds_features_as_documented(tmp_path):
    cache, data, _ = _synthetic_cache(tmp_path / "f", 30, 8, 2, n_train=4, n_eval=2, rows=10, dtype="float16")
    h, y = cache.train.tensors([1, 3], "cpu")
    H = data["train"][0]
    expected = np.concatenate([H[10:20], H[30:40]])
    assert h.dtype == torch.float32 and np.array_equal(h.numpy(), expected.astype(np.float16).astype(np.float32))
    assert np.array_equal(y.numpy(), np.concatenate([data["train"][1][10:20], data["train"][1][30:40]]))
    assert cache.feature_rms == pytest.approx(float(np.sqrt(np.square(H.astype(np.float16).astype(np.float64)).mean())), rel=1e-9)


@pytest.mark.parametrize("text", ["", "8,x", "1.5"])
def test_ranks_must_be_integers(text):
    with pytest.raises(UserError, match="--ranks"):
        parse_ranks(text)


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"lr_grid": (0.0,)}, "--lr-grid"),
        ({"lr_grid": (1e-2, 1e-2)}, "repeated"),
        ({"train_tokens": 100, "seq_len": 64}, "--train-tokens"),
        ({"steps": 0}, "--steps"),
        ({"feature_dtype": "int8"}, "--feature-dtype"),
        ({"search_steps": 0}, "--search-steps"),
        ({"full_rank_head": "dense"}, "--full-rank-head"),
    ],
)
def test_bad_settings_are_user_errors(changes, match):
    with pytest.raises(UserError, match=match):
        ProbeSettings(**changes).validate()
