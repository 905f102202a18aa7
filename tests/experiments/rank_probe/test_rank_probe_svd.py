"""SVD-initialised rank probes: the knee at a rank that is not a power of two, truncation curve, warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmsat.experiments.rank_probe import ProbeSettings, probe_rank
from lmsat.experiments.rank_probe.truncation import OwnHeadFactors, truncation_curve
from lmsat.nn.beyond import svd_factors
from lmsat.store import Store

from tests.experiments.rank_probe.test_rank_probe import _synthetic_cache


@pytest.fixture(scope="module")
def knee(tmp_path_factory):
    """Targets y ~ softmax(H M^T) with rank(M) = R = 12 (not a power of two), d = 24 = 2R, V = 200.

    The "model's own head" is M itself (a model that learned its language); the probe uses the
    default budget (ProbeSettings()), only with --init svd, and must show the knee at R."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("knee")
        settings = ProbeSettings()  # the default budget: 24576 + 2048 tokens, windows of 128, 90 steps
        V, d, R = 200, 24, 12
        cache, data, M = _synthetic_cache(root / "features", V, d, R, n_train=settings.n_train_seqs,
                                          n_eval=settings.n_eval_seqs, rows=settings.seq_len - 1, seed=7)
        own = OwnHeadFactors(svd_factors(M), None)
        store = Store(root / "run")
        recs = {r: probe_rank(store, cache, "syn", r, settings, {"model_key": "syn"}, "cpu", own_head=own) for r in (8, 12, 16)}
        trunc = truncation_curve(store, cache, "syn", own, {"model_key": "syn"}, "cpu", [8, 12, 16])
        return recs, trunc, data, M, cache
    finally:
        torch.set_num_threads(before)


def _paired(a, b) -> tuple[float, float]:
    diff = a.load_arrays()["eval_nll"].astype(np.float64) - b.load_arrays()["eval_nll"].astype(np.float64)
    return float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))


def test_default_budget_with_svd_init_finds_the_knee_at_a_rank_that_is_not_a_power_of_two(knee):
    recs, _, data, _, _ = knee
    entropy = float(data["eval"][2].mean())
    below, _ = _paired(recs[8], recs[12])
    above, se = _paired(recs[16], recs[12])
    assert below > 0.05  # below R the loss is clearly higher ...
    assert abs(above) < max(3 * se, 0.01)  # ... and past R it stops falling
    assert recs[12].results["loss"] == pytest.approx(entropy, abs=0.03)  # at R: the exact entropy, within sampling noise


def test_step_zero_loss_is_the_loss_of_the_svd_truncation(knee):
    recs, trunc, _, M, cache = knee
    arrays = trunc.load_arrays()
    by_rank = dict(zip(arrays["ranks"].tolist(), arrays["loss"].tolist()))
    for r, rec in recs.items():
        assert rec.results["step0_loss"] == pytest.approx(by_rank[r], rel=1e-6)
    # independent: numpy SVD truncation of M on the cached held-out features
    h, y = cache.eval.rows(np.arange(cache.eval.n_seqs))
    u, s, vt = np.linalg.svd(M, full_matrices=False)
    for r in (8, 12):
        z = h.astype(np.float64) @ ((u[:, :r] * s[:r]) @ vt[:r]).T
        z -= z.max(1, keepdims=True)
        nll = np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]
        assert by_rank[r] == pytest.approx(float(nll.mean()), rel=1e-5)
    assert arrays["ranks"][-1] == 24 and np.all(np.diff(arrays["loss"][arrays["ranks"] >= 12]) < 1e-4)


def test_a_chosen_rate_at_the_edge_of_the_grid_is_flagged(knee):
    recs, *_ = knee
    grid = ProbeSettings().rates  # the svd grid; its search also has rate 0 (the untrained truncation) below it
    assert min(grid) < max(grid)
    for rec in recs.values():
        assert rec.results["lr_at_grid_edge"] == (rec.results["lr"] == max(grid))
        assert set(rec.results["search_dev_loss"]) == {"0", *(f"{lr:g}" for lr in grid)}
    # rank 12 and 16 start at the optimum: training can only add noise there, so the search may keep rate 0
    assert recs[12].results["loss"] <= recs[12].results["step0_loss"] + 0.01
