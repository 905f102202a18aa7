"""Figure of ``lmsat causality``, drawn from the stored causality record only: seeds as groups."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lmsat.figures.style import new_figure, save


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def plot_causality(results: dict[str, Any], path: str | Path) -> Path:
    """Left: final effective rank / d vs relative loss rise, one dot per seed, the group's mean +- sd as a cross.
    Right: lead of the rank collapse over the loss rise per group (dots: seeds; bar: mean and bootstrap interval)."""
    fig, axes = new_figure(2, 1, width=5.6, height=4.2)
    left, right = axes[0]
    runs, groups = results.get("runs", []), results.get("groups", [])
    t = results.get("thresholds", {})
    colors = {g["group"]: f"C{i % 10}" for i, g in enumerate(groups)}
    for g in groups:
        members = [r for r in runs if r["group"] == g["group"]]
        c = colors[g["group"]]
        xs = [_num(r.get("final_rank_fraction")) for r in members]
        ys = [100 * _num(r.get("relative_rise")) for r in members]
        left.scatter(xs, ys, s=14, color=c, alpha=0.6)
        left.errorbar(_num(g.get("final_rank_fraction_mean")), 100 * _num(g.get("relative_rise_mean")),
                      xerr=_num(g.get("final_rank_fraction_sd")), yerr=100 * _num(g.get("relative_rise_sd")),
                      color=c, marker="x", ms=8, capsize=3, label=f"{g['group']} (n={g['n_seeds']})")
    if t:
        left.axhline(100 * t.get("max_rise", 0.01), color="0.4", ls="--", lw=0.8)
        left.axvline(t.get("low_rank", 0.5), color="0.4", ls=":", lw=0.8)
    left.set_xlabel("final effective rank / d")
    left.set_ylabel("relative loss rise final/best - 1 (%)")
    left.set_title("Low rank vs saturation (dashed: thresholds)")
    if len(groups) <= 12:
        left.legend(loc="best", fontsize=6)
    shown = 0
    for i, g in enumerate(groups):
        members = [r for r in runs if r["group"] == g["group"] and r.get("loss_onset") is not None and r.get("rank_onset") is not None]
        if not members:
            continue
        lags = [r["loss_onset"] - r["rank_onset"] for r in members]
        right.scatter(lags, [i] * len(lags), s=14, color=colors[g["group"]], alpha=0.6)
        lo, hi, m = _num(g.get("lag_low")), _num(g.get("lag_high")), _num(g.get("lag_mean"))
        right.errorbar(m, i, xerr=[[m - lo], [hi - m]], color=colors[g["group"]], marker="|", ms=12, capsize=3)
        shown += 1
    right.axvline(0, color="0.3", lw=0.8)
    right.set_yticks(range(len(groups)))
    right.set_yticklabels([g["group"] for g in groups], fontsize=6)
    right.set_xlabel("loss-rise onset - rank-collapse onset (steps); > 0: collapse first")
    right.set_title("Lead/lag over seeds (bar: mean, bootstrap interval)")
    if not shown:
        right.text(0.5, 0.5, "no run has both a loss rise\nand a rank collapse", transform=right.transAxes, ha="center", va="center")
    return save(fig, path)
