"""Figures of the data's inherent dimension (the study's Fig. 7), drawn from ``ngram`` records only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmsat.figures.style import new_figure, save
from lmsat.kinds.ngram import NgramRecord, frame
from lmsat.store import Record, Store, atomic_write_csv


MAX_POINTS = 2000  # points drawn per line: curves of 50k values render as well from 2k


def _thin(n: int, log: bool = False) -> np.ndarray:
    """At most ~MAX_POINTS sorted indices into a line of n points (first and last kept), log-spaced if ``log``."""
    if n <= MAX_POINTS:
        return np.arange(n)
    grid = np.geomspace(1, n, MAX_POINTS) - 1 if log else np.linspace(0, n - 1, MAX_POINTS)
    return np.unique(np.concatenate([[0, n - 1], grid.astype(np.int64)]))


def ngram_label(rec: Record) -> str:
    """``corpus · tokenizer · n=5 · ...`` from the record key (one line per corpus x tokenizer x options)."""
    return " · ".join(rec.key.split("|"))


def plot_ngram_w_error(records: list[Record], path: str | Path, log_x: bool = False) -> Path:
    """W-error(d) = sqrt(sum_{i>d} s_i^2) / |P|_F vs d, one line per record (the study's Fig. 7).

    A truncated spectrum's line stops at the last computed d (marked with x); past the dense limit the
    tail's estimate continues it (dashed, its interval shaded; docs/ngram.md, "Past the dense limit"). A dashed line in the
    record's colour is its sampling-noise floor (``results.noise.floor``), a square the d where
    the curve reaches it.
    """
    fig, axes = new_figure(width=7.0, height=4.6)
    ax = axes[0, 0]
    for rec in records:
        curve = rec.load_arrays()["w_error"]
        d = np.arange(len(curve))
        if log_x:
            d, curve = d[1:], curve[1:]
        keep = _thin(len(d), log=log_x)
        d, curve = d[keep], curve[keep]
        (line,) = ax.plot(d, curve, label=ngram_label(rec))
        arrays = rec.load_arrays()
        if "tail_curve" in arrays:  # past the computed values: the tail's estimate (dashed) and its interval (band)
            td, tw, tlo, thi = arrays["tail_curve"]
            ax.plot(td, tw, ls="--", color=line.get_color(), lw=1.0)
            ax.fill_between(td, tlo, thi, color=line.get_color(), alpha=0.15, lw=0)
        elif not rec.results.get("complete", True) and len(d):
            ax.plot(d[-1:], curve[-1:], marker="x", color=line.get_color())
        noise = rec.results.get("noise") or {}
        if noise.get("floor") is not None:  # the sampling-noise floor: below it the curve measures noise
            ax.axhline(noise["floor"], color=line.get_color(), lw=0.8, ls="--", alpha=0.7)
            d_noise = rec.results.get("noise_floor_dimension")
            if d_noise is not None:
                ax.plot([d_noise], [noise["floor"]], marker="s", ms=3.5, color=line.get_color())
        d10 = (rec.results.get("dims_for_w_error") or {}).get("0.1")
        if d10:
            ax.plot([d10], [0.1], marker="o", ms=3, color=line.get_color())
    for t in (0.5, 0.1):
        ax.axhline(t, color="0.6", lw=0.7, ls=":")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("dimension d (rank of the approximation)")
    ax.set_ylabel("W-error(d) = |P - P_d|_F / |P|_F")
    ax.set_ylim(0, 1.02)
    ax.set_title("n-gram next-token matrix: best rank-d error\n(dots: d for W-error 0.1; dashed: sampling-noise floor, squares: d where reached)", fontsize=9)
    ax.legend()
    return save(fig, path)


def plot_ngram_spectrum(records: list[Record], path: str | Path) -> Path:
    """Singular values s_i / |P|_F of each n-gram matrix, log-log."""
    fig, axes = new_figure(width=7.0, height=4.6)
    ax = axes[0, 0]
    for rec in records:
        s = rec.load_arrays()["singular_values"]
        s = s[s > 0] / rec.results["frobenius_norm"]
        keep = _thin(len(s), log=True)
        ax.plot(keep + 1, s[keep], label=ngram_label(rec))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("s_i / |P|_F")
    ax.set_title("Singular values of the n-gram next-token matrix")
    ax.legend()
    return save(fig, path)


def refresh_outputs(run_dir: str | Path) -> dict[str, Any]:
    """Rewrite ``run_dir/ngram.csv`` (:func:`lmsat.kinds.ngram.frame`, one row per ``ngram`` record) and
    ``run_dir/figures/ngram_w_error.png`` / ``ngram_spectrum.png`` from the stored records only.

    Returns ``{"frame": the CSV's frame, "csv": its path, "figures": [W-error figure, spectrum figure]}``.
    """
    run_dir = Path(run_dir)
    typed = NgramRecord.load(Store(run_dir, readonly=True))  # checks every record's schema
    table = frame(typed)
    atomic_write_csv(run_dir / "ngram.csv", table)
    records = [t.record for t in typed if t.record is not None]
    figures = run_dir / "figures"
    drawn = [plot_ngram_w_error(records, figures / "ngram_w_error.png"), plot_ngram_spectrum(records, figures / "ngram_spectrum.png")]
    return {"frame": table, "csv": run_dir / "ngram.csv", "figures": drawn}
