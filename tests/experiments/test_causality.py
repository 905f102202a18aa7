"""Onset rule, bootstrap and correlation intervals, co-occurrence and lead/lag: known answers.

Curves are constructed with a known onset; the bootstrap of a 0/1 sample is checked against
its closed form (the resampled mean is Binomial(n, p)/n); the Fisher-z interval against its
formula; the co-occurrence counts and lags against hand-made records.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lmsat.errors import UserError
from lmsat.measure.onsets import (
    bootstrap_mean_ci,
    bootstrap_means,
    detrended_correlation,
    fall_onset,
    loss_rise_onset,
    pearson_ci,
    rise_onset,
)
from lmsat.experiments.causality import Thresholds, cooccurrence, lead_lag, split_seed

STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 500, 1000, 1500, 2000, 2500, 3000])


def test_rise_onset_of_a_step_is_the_first_checkpoint_after_the_jump():
    v = np.where(STEPS >= 1500, 5.0, 0.3)
    onset = rise_onset(STEPS, v, min_rise=1.0)
    assert onset.step == 1500 and onset.rise == pytest.approx(4.7)
    assert onset.peak_step == 1500 and onset.low_step == 0


def test_rise_onset_of_a_ramp_is_its_half_way_crossing():
    # linear from 0 (step 1000) to 10 (step 3000), half level 5: 1500 (2.5) is the last value below it
    v = np.clip((STEPS - 1000) / 200.0, 0, 10)
    assert rise_onset(STEPS, v, min_rise=1.0).step == 2000
    assert rise_onset(STEPS, v + 0.0, min_rise=11.0).step is None


def test_rise_onset_ignores_an_early_transient_and_from_step_drops_it():
    v = np.full(len(STEPS), 0.2)
    v[(STEPS >= 16) & (STEPS <= 64)] = 2.0  # early transient, falls back
    v[STEPS >= 2000] = 3.0  # the late jump, higher
    assert rise_onset(STEPS, v, 1.0).step == 2000
    # a transient that is the global maximum is the one found, unless from_step skips it
    v2 = v.copy()
    v2[(STEPS >= 16) & (STEPS <= 64)] = 4.0
    assert rise_onset(STEPS, v2, 1.0).step == 16
    assert rise_onset(STEPS, v2, 1.0, from_step=128).step == 2000


def test_fall_onset_is_the_rise_of_the_negated_curve():
    rank = np.where(STEPS >= 1000, 2.0, 30.0)
    onset = fall_onset(STEPS, rank, min_fall=0.25 * 30.0)
    assert onset.step == 1000 and onset.rise == pytest.approx(28.0)
    assert fall_onset(STEPS, rank, min_fall=29.0).step is None


def test_loss_rise_onset_after_the_minimum():
    # loss falls to 3.0 at step 1000, then rises linearly to 3.3 at step 3000
    loss = np.where(STEPS <= 1000, 6.0 - 3.0 * STEPS / 1000.0, 3.0 + 0.3 * (STEPS - 1000) / 2000.0)
    onset = loss_rise_onset(STEPS, loss, max_rise=0.01)
    # half level 3.15: values 3.075 (1500), 3.15 (2000: not below), so last below is 1500 -> onset 2000
    assert onset.step == 2000 and onset.rise == pytest.approx(0.3)
    assert loss_rise_onset(STEPS, loss, max_rise=0.2).step is None  # 0.3 < 0.2 x 3.0 = 0.6


def test_onset_rule_is_the_one_saturation_uses():
    from lmsat.experiments.saturation import jump_step

    rng = np.random.default_rng(3)
    for _ in range(20):
        v = rng.normal(size=len(STEPS)).cumsum()
        onset = rise_onset(STEPS, v, 0.5, from_step=4)
        assert jump_step(STEPS, v, 0.5, from_step=4) == (onset.step, onset.rise)


def test_bootstrap_of_a_binary_sample_matches_the_binomial_closed_form():
    # resampling n values with replacement from a sample with k ones gives a mean ~ Binomial(n, k/n) / n
    n, k = 10, 3
    x = np.array([1.0] * k + [0.0] * (n - k))
    means = bootstrap_means(x, n_boot=200_000, seed=1)
    p = k / n
    assert means.mean() == pytest.approx(p, abs=0.002)
    assert means.std() == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.01)
    ci = bootstrap_mean_ci(x, level=0.9, n_boot=200_000, seed=1)
    assert ci.low == pytest.approx(stats.binom.ppf(0.05, n, p) / n)
    assert ci.high == pytest.approx(stats.binom.ppf(0.95, n, p) / n)
    assert ci.estimate == pytest.approx(p) and ci.n == n


def test_bootstrap_degenerate_cases():
    one = bootstrap_mean_ci([7.0])
    assert one.estimate == 7.0 and math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(bootstrap_mean_ci([]).estimate)


def test_pearson_interval_is_fisher_z():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.6 * x + rng.normal(size=40)
    ci = pearson_ci(x, y, level=0.95)
    r = float(stats.pearsonr(x, y).statistic)
    half = 1.959963984540054 / math.sqrt(40 - 3)
    assert ci.estimate == pytest.approx(r)
    assert ci.low == pytest.approx(math.tanh(math.atanh(r) - half))
    assert ci.high == pytest.approx(math.tanh(math.atanh(r) + half))


def test_detrending_removes_the_correlation_of_two_independent_trends():
    rng = np.random.default_rng(5)
    t = np.arange(300.0)
    x = -t + rng.normal(scale=5, size=t.size)  # e.g. an effective rank falling
    y = -0.01 * t + rng.normal(scale=0.05, size=t.size)  # e.g. a loss falling, independent noise
    assert pearson_ci(x, y).estimate > 0.9
    d = detrended_correlation(x, y)
    assert abs(d.estimate) < 0.15 and d.low < 0 < d.high
    # and it keeps a real step-to-step link: y moving with x's increments
    z = np.cumsum(rng.normal(size=t.size))
    assert detrended_correlation(z, 2 * z + rng.normal(scale=0.1, size=t.size)).estimate > 0.95


def _row(seed, sat, low, loss_onset=None, rank_onset=None, group="g"):
    return {"group": group, "seed": seed, "saturates": sat, "low_rank": low, "collapses": rank_onset is not None, "best_step": 2000,
            "loss_onset": loss_onset, "rank_onset": rank_onset, "entropy_onset": None, "anisotropy_onset": None}


def test_cooccurrence_counts_hand_made_runs():
    rows = [_row(0, True, True), _row(1, True, False), _row(2, False, True), _row(3, False, True), _row(4, False, False),
            _row(5, None, True)]
    assert cooccurrence(rows) == {"low_and_saturates": 1, "low_no_saturation": 2, "high_and_saturates": 1,
                                  "high_no_saturation": 1, "unknown": 1}


def test_lead_lag_of_hand_made_onsets():
    rows = [_row(0, True, True, 3000, 1000), _row(1, True, True, 2000, 1500), _row(2, True, True, 1000, 2000),
            _row(3, True, False, 2500, None), _row(4, False, True, None, 500)]
    ll = lead_lag(rows, "rank", Thresholds(n_boot=20_000))
    lags = [2000.0, 500.0, -1000.0]
    assert ll["n_both"] == 3 and ll["n_rise_only"] == 1 and ll["n_sign_only"] == 1
    assert ll["lag_mean"] == pytest.approx(np.mean(lags)) and ll["precedes"] == pytest.approx(2 / 3)
    assert ll["before_best"] == 2  # collapses at 1000 and 1500 come before the best step 2000; 2000 does not
    # percentile interval of 3 values lies within their range and brackets the mean
    assert -1000 <= ll["lag_low"] < ll["lag_mean"] < ll["lag_high"] <= 2000


def test_seed_names_and_threshold_errors():
    assert split_seed("pythia-70m-seed3") == ("pythia-70m", 3)
    assert split_seed("pythia-70m") == ("pythia-70m", None)
    with pytest.raises(UserError):
        Thresholds(rank_drop=1.5).validate()
    with pytest.raises(UserError):
        Thresholds(level=1.0).validate()


def test_polypythias_suite_expands_to_seeded_hub_names_with_their_seed():
    from lmsat.cli.parse import parse_seeds
    from lmsat.loading.checkpoints import PYTHIA_STEPS, expand_sweep, model_seed, suite_models

    assert parse_seeds("1-3,7") == [1, 2, 3, 7] and parse_seeds("0,2") == [0, 2]
    assert suite_models("polypythias", "14m,70m", [1, 2]) == [
        "EleutherAI/pythia-14m-seed1", "EleutherAI/pythia-14m-seed2", "EleutherAI/pythia-70m-seed1", "EleutherAI/pythia-70m-seed2"]
    models = expand_sweep(suite="polypythias", sizes="14m", seeds=parse_seeds("0-9"), revisions="all")
    assert [m.model for m in models][:2] == ["EleutherAI/pythia-14m", "EleutherAI/pythia-14m-seed1"] and len(models) == 10
    assert [m.checkpoints[0].seed for m in models] == list(range(10))
    assert all(len(m.checkpoints) == len(PYTHIA_STEPS) == 154 and m.tokens_per_step == 2_097_152 for m in models)
    assert model_seed("EleutherAI/pythia-160m-data-seed2") == 2 and model_seed("EleutherAI/pythia-160m") is None
    for bad in (dict(suite="polypythias", sizes="1b", seeds=[1]), dict(suite="pythia", sizes="14m", seeds=[1]),
                dict(suite="polypythias", sizes="14m", seeds=[10])):
        with pytest.raises(UserError):
            expand_sweep(revisions="final", **bad)
    with pytest.raises(UserError):
        parse_seeds("3-1")


def test_group_labels_name_only_the_settings_that_split_the_runs():
    from lmsat.experiments.causality import Run, _label_train_groups

    def run(model, **settings):
        z = np.zeros(2)
        return Run("d", model, model, 0, 8, "train", z.astype(int), z, z, z, z, settings)

    runs = [run("m-d8-l2", batch_size=16, steps=768, weight_decay=0.01),  # an older record: no "head" setting
            run("m-d8-l2-seed1", batch_size=16, steps=768, weight_decay=0.01, head="softmax"),
            run("m-d8-l2", batch_size=128, steps=96, weight_decay=0.01, head="softmax"),
            run("m-d8-l2-seed1-mos4", batch_size=128, steps=96, weight_decay=0.01, head="mos:4")]
    _label_train_groups(runs)
    # steps follow from the batch size (same token budget), the missing head is the default softmax, and the head
    # is already told apart by the model name (-mos4)
    assert [r.group for r in runs] == ["m-d8-l2 batch=16", "m-d8-l2 batch=16", "m-d8-l2 batch=128", "m-d8-l2-mos4 batch=128"]
    grid = [run("m-d8-l2", batch_size=16, weight_decay=0.5), run("m-d8-l2", batch_size=16, weight_decay=0.01, head="softmax")]
    _label_train_groups(grid)
    assert [r.group for r in grid] == ["m-d8-l2 wd=0.5", "m-d8-l2 wd=0.01"]
