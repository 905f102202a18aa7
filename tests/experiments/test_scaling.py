"""Scaling-law fit L = E + A/N^alpha + B/T^beta (E, B, beta fixed): recovery of known A and alpha."""

from __future__ import annotations

import numpy as np
import pytest

from lmsat.errors import UserError
from lmsat.experiments.scaling import (
    B_FIXED,
    BETA_FIXED,
    E_FIXED,
    STUDY_A,
    STUDY_ALPHA,
    chinchilla_loss,
    fit_scaling_law,
    underperformance,
)

# Pythia's parameter counts (14m .. 2.8b) and final tokens seen 143000 x 2,097,152
N = np.array([14_067_712, 30_494_720, 70_426_624, 162_322_944, 405_334_016, 1_011_781_632, 1_414_647_808, 2_775_208_960], dtype=float)
T_FINAL = 143_000 * 2_097_152


def test_law_matches_the_formula_written_out():
    n, t, A, alpha = 4.1e8, 3.0e11, 119.09, 0.246
    assert float(chinchilla_loss(n, t, A, alpha)) == pytest.approx(1.69 + 119.09 / 4.1e8**0.246 + 410.7 / 3.0e11**0.28, rel=1e-15)
    assert (E_FIXED, B_FIXED, BETA_FIXED) == (1.69, 410.7, 0.28)
    assert float(underperformance(2.16, 2.0)) == pytest.approx(0.08)


def test_fit_recovers_A_and_alpha_exactly_without_noise():
    rng = np.random.default_rng(0)
    t = rng.uniform(0.2, 1.0, len(N)) * T_FINAL
    fit = fit_scaling_law(N, t, chinchilla_loss(N, t, STUDY_A, STUDY_ALPHA))
    assert fit.A == pytest.approx(STUDY_A, rel=1e-6)
    assert fit.alpha == pytest.approx(STUDY_ALPHA, abs=1e-8)
    assert fit.rmse < 1e-9 and fit.n_points == len(N) and fit.notes == []


@pytest.mark.parametrize("A, alpha", [(STUDY_A, STUDY_ALPHA), (406.4, 0.34), (50.0, 0.2)])
def test_fit_recovers_known_A_and_alpha_from_noisy_points(A, alpha):
    """0.2% multiplicative noise on the loss; 20 data sets; the fit is also the least-squares optimum."""
    errors = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        t = rng.uniform(0.3, 1.0, len(N)) * T_FINAL
        clean = chinchilla_loss(N, t, A, alpha)
        noisy = clean * (1 + 0.002 * rng.standard_normal(len(N)))
        fit = fit_scaling_law(N, t, noisy)
        errors.append((fit.A / A - 1, fit.alpha - alpha))
        sse_fit = np.sum((fit.predict(N, t) - noisy) ** 2)
        sse_true = np.sum((clean - noisy) ** 2)
        assert sse_fit <= sse_true * (1 + 1e-9)
        # no nearby (A, alpha) does better: a local grid around the solution
        for dA in (0.99, 1.01):
            for da in (-0.001, 0.001):
                assert sse_fit <= np.sum((chinchilla_loss(N, t, fit.A * dA, fit.alpha + da) - noisy) ** 2)
    err = np.abs(np.array(errors))
    assert err[:, 1].max() < 0.01  # alpha within 0.01 on every data set
    assert err[:, 0].mean() < 0.05 and err[:, 1].mean() < 0.003


def test_two_sizes_give_the_exact_solution_and_one_size_is_refused():
    t = np.array([T_FINAL, T_FINAL / 2])
    n = np.array([4e8, 1.4e9])
    fit = fit_scaling_law(n, t, chinchilla_loss(n, t, 200.0, 0.3))
    assert (fit.A, fit.alpha) == (pytest.approx(200.0, rel=1e-6), pytest.approx(0.3, abs=1e-8))
    with pytest.raises(UserError, match="at least two model sizes"):
        fit_scaling_law([4e8, 4e8], t, [2.5, 2.4])


def test_points_below_the_law_floor_are_flagged():
    t = np.array([1e4, 1e4])  # so few tokens that B/T^beta alone exceeds the loss
    fit = fit_scaling_law([1e5, 2e5], t, [6.0, 5.5])
    assert fit.notes and "too few tokens" in fit.notes[0]
