"""Onsets of changes in curves over training, and the statistics that compare them across seeds.

The onset rule (one rule, shared by ``lmsat saturation`` and ``lmsat causality``; docs/causality.md)
-----------------------------------------------------------------------------------------------------
For a curve v(t) over checkpoints t_0 < t_1 < ... (only t >= ``from_step`` and finite v count):

    k  = the first index where v reaches its maximum m = max_j v_j
    lo = min_{j <= k} v_j                     (the lowest value before the peak)
    a rise exists when  k > 0  and  m - lo >= min_rise
    onset = t_{i+1},  i = the last index < k with v_i < (lo + m) / 2

i.e. the first checkpoint after the last upward crossing of the half-rise level before the peak
(:func:`rise_onset`). A transient early rise that falls back below the half level is therefore
not mistaken for the main one, and a rise reached in one jump between two checkpoints gets the
step of the checkpoint that first shows it. A *fall* (e.g. of effective rank) is the rise of -v
(:func:`fall_onset`).

Applied to the study's three signs:

* **loss-rise onset** (saturation, docs/methods.md §5): the held-out loss falls from step 0, so its late
  rise is looked for from the best (lowest-loss) checkpoint on: ``rise_onset(t, loss,
  min_rise, from_step=best_step)`` (:func:`loss_rise_onset`);
* **head-collapse onset** (docs/methods.md §3): the rise of the singular entropy ln k - H(p) (nats), or the
  fall of the effective rank exp(H(p)) (a fraction of its peak value);
* **anisotropy jump** (docs/methods.md §1): the rise of the last layer's anisotropy.

Statistics across seeds and within a run (pure functions):

* :func:`bootstrap_mean_ci`: percentile bootstrap interval of a mean over seeds;
* :func:`pearson_ci`: Pearson r with the Fisher-z interval tanh(atanh r +- z_{1-a/2} / sqrt(n - 3));
* :func:`detrended_correlation`: Pearson r of the first differences, so two curves that merely both
  move monotonically over training do not count as associated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class Onset:
    """Result of the onset rule: ``step`` (None when no rise of at least ``min_rise``), the rise
    m - lo, and the steps of the low point and of the peak (None when fewer than 2 points)."""

    step: int | None
    rise: float
    low_step: int | None = None
    peak_step: int | None = None


def _clean(steps: Sequence[int], values: Sequence[float], from_step: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(steps, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if s.shape != v.shape:
        raise ValueError(f"steps and values differ in length ({s.shape} vs {v.shape})")
    keep = (s >= from_step) & np.isfinite(v)
    s, v = s[keep], v[keep]
    order = np.argsort(s, kind="stable")
    return s[order], v[order]


def rise_onset(steps: Sequence[int], values: Sequence[float], min_rise: float, from_step: int = 0) -> Onset:
    """The onset rule of the module docstring: first checkpoint after the last crossing of
    (lo + m) / 2 before the peak m, when m - lo >= ``min_rise``; units of ``values``."""
    s, v = _clean(steps, values, from_step)
    if len(v) < 2:
        return Onset(None, 0.0)
    k = int(np.argmax(v))
    j = int(np.argmin(v[: k + 1]))
    lo = float(v[j])
    rise = float(v[k] - lo)
    if k == 0 or rise < min_rise or rise <= 0:
        return Onset(None, rise, int(s[j]), int(s[k]))
    half = lo + rise / 2.0
    below = np.nonzero(v[:k] < half)[0]
    return Onset(int(s[below[-1] + 1]), rise, int(s[j]), int(s[k]))


def fall_onset(steps: Sequence[int], values: Sequence[float], min_fall: float, from_step: int = 0) -> Onset:
    """The onset rule applied to -v: where v falls by at least ``min_fall`` (``rise`` = the fall, > 0)."""
    s, v = _clean(steps, values, from_step)
    return rise_onset(s, -v, min_fall)


def best_step(steps: Sequence[int], losses: Sequence[float]) -> int:
    """Step of the lowest finite loss (the earliest on ties)."""
    s, v = _clean(steps, losses, np.iinfo(np.int64).min)
    if len(v) == 0:
        raise ValueError("no finite loss")
    return int(s[int(np.argmin(v))])


def loss_rise_onset(steps: Sequence[int], losses: Sequence[float], max_rise: float) -> Onset:
    """Onset of the late loss rise: :func:`rise_onset` from the best step on, with
    min_rise = ``max_rise`` x best loss (a relative rise, as saturation's final / best - 1 > max_rise)."""
    b = best_step(steps, losses)
    s, v = _clean(steps, losses, b)
    return rise_onset(s, v, max_rise * float(v[0]), from_step=b)


# --- statistics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval at level ``level`` from ``n`` values."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95


def bootstrap_means(values: Sequence[float], n_boot: int = 10_000, seed: int = 0) -> np.ndarray:
    """``n_boot`` means of resamples with replacement of ``values`` (numpy's default_rng(seed))."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    return x[idx].mean(axis=1)


def bootstrap_mean_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> Interval:
    """Mean of ``values`` and its percentile bootstrap interval: the (1-level)/2 and (1+level)/2
    quantiles of :func:`bootstrap_means`. With one value there is no interval (NaN bounds); with few
    values (seeds) it is too narrow, as any bootstrap is (docs/causality.md)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        m = float(x[0]) if x.size else math.nan
        return Interval(m, math.nan, math.nan, int(x.size), level)
    means = bootstrap_means(x, n_boot, seed)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return Interval(float(x.mean()), float(lo), float(hi), int(x.size), level)


def pearson_ci(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> Interval:
    """Pearson r = cov(x, y) / (sd x sd y) over the pairs where both are finite, with the Fisher-z
    interval tanh(atanh r +- z / sqrt(n - 3)), z the (1+level)/2 normal quantile. NaN when n < 3 or
    a series is constant; the interval is NaN when n < 4. It assumes independent pairs: checkpoints
    of one run are not, so read it as a lower bound on the uncertainty."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(a.size)
    if n < 3 or a.std() == 0 or b.std() == 0:
        return Interval(math.nan, math.nan, math.nan, n, level)
    r = float(np.clip(np.corrcoef(a, b)[0, 1], -1.0, 1.0))
    if n < 4 or abs(r) == 1.0:
        return Interval(r, r if abs(r) == 1.0 else math.nan, r if abs(r) == 1.0 else math.nan, n, level)
    z = math.atanh(r)
    half = NormalDist().inv_cdf((1.0 + level) / 2.0) / math.sqrt(n - 3)
    return Interval(r, math.tanh(z - half), math.tanh(z + half), n, level)


def detrended_correlation(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> Interval:
    """:func:`pearson_ci` of the first differences (x_{i+1} - x_i, y_{i+1} - y_i): do the two curves
    move together from checkpoint to checkpoint, beyond both trending over training?"""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    return pearson_ci(np.diff(a[keep]), np.diff(b[keep]), level)
