"""Figures of checkpoint sweeps (the study's Fig. 1a, 1b, 3, 4, 5), drawn from stored records only.

Every function takes the per-checkpoint table of the sweep records
(:func:`lmsat.kinds.sweep.frame`, which only reads the
records) and, for Fig. 4, the records themselves (their stored singular values);
Fig. 1b also takes the stored ``scaling_fit`` record's results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lmsat.figures.style import DPI, new_figure, save
from lmsat.kinds.sweep import usable_rows as usable
from lmsat.store import Record, atomic_savefig

TOP_K = 100
FIGURES = {
    "fig1a": "fig1a_loss_vs_step.png",
    "fig1b": "fig1b_loss_vs_compute.png",
    "fig3": "fig3_loss_anisotropy.png",
    "fig4": "fig4_spectrum_heatmap.png",
    "fig5": "fig5_singular_entropy.png",
}


#: Per-checkpoint columns averaged over seeds (their min and max are kept for the bands).
SEED_VALUES = ["cross_entropy", "last_layer_anisotropy", "singular_entropy", "effective_rank", "n_params", "tokens_per_step", "hidden_size"]


def seed_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """The usable checkpoints with models that differ only in their seed (``-seedN``) collapsed into one
    model per group: per step, each value's mean over seeds, with ``<value>_min`` / ``<value>_max`` for
    the band, ``n_seeds``, and ``key`` the list of the seeds' record keys (lmsat.kinds.seeds).
    ``frame`` is returned unchanged when no two models differ only in their seed."""
    from lmsat.kinds.seeds import group_over_seeds, has_seed_groups, split_seed

    if frame.empty or not has_seed_groups(list(dict.fromkeys(str(n) for n in frame["name"]))):
        return frame
    rows = []
    for r in usable(frame).to_dict("records"):
        base, seed = split_seed(str(r["name"]))
        rows.append({**r, "group": base, "_seed": seed})
    seeds = {}
    for r in rows:
        seeds.setdefault(r["group"], set()).add(r["_seed"])
    g = group_over_seeds(rows, ["group", "step"], SEED_VALUES, seed="_seed")
    keys = {}
    for r in rows:
        keys.setdefault((r["group"], r["step"]), []).append(r["key"])
    out = pd.DataFrame({
        "model": g["group"], "name": [f"{b} ({len(seeds[b])} seeds)" if len(seeds[b]) > 1 else b for b in g["group"]],
        "step": g["step"], "status": "ok", "duplicate_of": None, "n_seeds": g["n_seeds"],
        "key": [keys[(b, t)] for b, t in zip(g["group"], g["step"])],
        **{c: g[f"{c}_mean"] for c in SEED_VALUES},
        **{f"{c}_{m}": g[f"{c}_{m}"] for c in ("cross_entropy", "last_layer_anisotropy", "singular_entropy", "effective_rank") for m in ("min", "max")},
    })
    return out


def _band(ax: Any, x: Any, g: pd.DataFrame, column: str, color: Any) -> None:
    """The min-max band over seeds of ``column`` (drawn only for seed groups, :func:`seed_groups`)."""
    if f"{column}_min" in g and (g["n_seeds"] > 1).any():
        ax.fill_between(x, g[f"{column}_min"].astype(float), g[f"{column}_max"].astype(float), color=color, alpha=0.2, lw=0)


def _models(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(model, its usable checkpoints sorted by step), in the table's order, models with none left out."""
    out = []
    for model in dict.fromkeys(frame["model"]):
        good = usable(frame[frame["model"] == model]).sort_values("step")
        if len(good):
            out.append((str(model), good))
    return out


def _colors(n: int) -> list[Any]:
    cmap = plt.get_cmap("viridis")
    return [cmap(x) for x in (np.linspace(0.05, 0.9, n) if n > 1 else [0.4])]


def _num(x: Any) -> float | None:
    """A positive finite number, else None (missing values arrive as None or NaN)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def plot_loss_vs_step(frame: pd.DataFrame, path: str | Path) -> Path:
    """Fig. 1a: cross-entropy vs training step, one line per model; the best checkpoint starred."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    models = _models(frame)
    for (model, g), color in zip(models, _colors(len(models))):
        name = g["name"].iloc[0]
        ax.plot(g["step"], g["cross_entropy"], color=color, lw=1.3, label=name)
        _band(ax, g["step"], g, "cross_entropy", color)
        b = g["cross_entropy"].astype(float).idxmin()
        ax.plot([g.loc[b, "step"]], [g.loc[b, "cross_entropy"]], marker="*", ms=11, color=color, mec="black", mew=0.5, ls="none")
    if not models:
        _empty(ax, "no successfully measured checkpoint")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Loss over training (star: best checkpoint)" + _SEED_NOTE * _seeded(frame))
    if models:
        ax.legend()
    return save(fig, path)


def plot_loss_vs_compute(frame: pd.DataFrame, fit: dict[str, Any] | None, path: str | Path) -> Path:
    """Fig. 1b: loss vs compute 6 N T (log x) per model, with the fitted law L(N, T) dashed;
    best checkpoint starred, final one circled. ``fit``: the stored ``scaling_fit`` results (or None)."""
    from lmsat.experiments.scaling import chinchilla_loss

    fig, axes = new_figure()
    ax = axes[0, 0]
    models = _models(frame)
    drawn = 0
    observed: list[float] = []
    for (model, g), color in zip(models, _colors(len(models))):
        g = g[(g["step"] > 0) & g["n_params"].notna()]
        if fit is not None:
            facts = {m["model"]: m for m in fit.get("models", [])}.get(model, {})
            n = facts.get("n_params") or (g["n_params"].iloc[0] if len(g) else None)
            tps = facts.get("tokens_per_step") or (g["tokens_per_step"].iloc[0] if len(g) else None)
        else:
            n = g["n_params"].iloc[0] if len(g) else None
            tps = g["tokens_per_step"].iloc[0] if len(g) else None
        n, tps = _num(n), _num(tps)
        if not len(g) or not n or not tps:
            continue
        tokens = g["step"].to_numpy(dtype=float) * float(tps)
        compute = 6.0 * float(n) * tokens
        name = g["name"].iloc[0]
        ax.plot(compute, g["cross_entropy"], color=color, lw=1.2, label=name)
        _band(ax, compute, g, "cross_entropy", color)
        observed += list(g["cross_entropy"].astype(float))
        b = g["cross_entropy"].astype(float).to_numpy().argmin()
        ax.plot([compute[b]], [g["cross_entropy"].iloc[b]], marker="*", ms=11, color=color, mec="black", mew=0.5, ls="none")
        ax.plot([compute[-1]], [g["cross_entropy"].iloc[-1]], marker="o", ms=7, mfc="none", mec=color, mew=1.5, ls="none")
        if fit is not None:
            t = np.geomspace(tokens.min(), tokens.max(), 200)
            ax.plot(6.0 * float(n) * t, chinchilla_loss(float(n), t, fit["A"], fit["alpha"], fit["E"], fit["B"], fit["beta"]),
                    color=color, ls="--", lw=1.0)
        drawn += 1
    if not drawn:
        _empty(ax, "tokens per step or parameter counts unknown")
    else:  # the law may lie far off for models it does not describe: keep the data in view
        lo, hi = min(observed), max(observed)
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.15 * (hi - lo + 1e-9))
    ax.set_xscale("log")
    ax.set_xlabel("compute 6 N T (FLOPs)")
    ax.set_ylabel("cross-entropy (nats/token)")
    if fit is not None:
        ax.set_title(f"Loss vs compute; dashed: fitted law (A={fit['A']:.4g}, alpha={fit['alpha']:.3f})")
    else:
        ax.set_title("Loss vs compute (no scaling-law fit: run lmsat scaling-fit)")
    if drawn:
        ax.legend(title="star: best, circle: final")
    return save(fig, path)


def plot_loss_anisotropy(frame: pd.DataFrame, path: str | Path) -> Path:
    """Fig. 3: loss vs step per model, each checkpoint coloured by its last-layer anisotropy (0..1)."""
    fig, axes = new_figure(width=7.0)
    ax = axes[0, 0]
    models = _models(frame)
    sc = None
    for model, g in models:
        ax.plot(g["step"], g["cross_entropy"], color="0.6", lw=0.8, zorder=1)
        _band(ax, g["step"], g, "cross_entropy", "0.6")
        sc = ax.scatter(g["step"], g["cross_entropy"], c=g["last_layer_anisotropy"].astype(float), cmap="plasma", vmin=0.0, vmax=1.0, s=18, zorder=2)
        last = g.iloc[-1]
        ax.annotate(str(last["name"]), (last["step"], last["cross_entropy"]), fontsize=7, xytext=(3, 0), textcoords="offset points")
    if sc is not None:
        fig.colorbar(sc, ax=ax, label="last-layer anisotropy")
    else:
        _empty(ax, "no successfully measured checkpoint")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Loss over training, coloured by last-layer anisotropy" + _SEED_NOTE * _seeded(frame))
    return save(fig, path)


def plot_spectrum_heatmap(frame: pd.DataFrame, records: Sequence[Record], path: str | Path, top_k: int = TOP_K) -> Path:
    """Fig. 4: s_i / s_1 for i = 1..top_k (rows) vs checkpoint (columns, labelled by step), one panel per model."""
    by_key = {r.key: r for r in records}
    models = _models(frame)
    ncols = max(1, min(3, len(models)))
    nrows = max(1, math.ceil(len(models) / ncols))
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=4.2, height=3.6)
    mesh = None
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for i, (ax, (model, g)) in enumerate(zip(axes.flat, models)):
        cols = []
        for key in g["key"]:  # a seed group's checkpoint holds its seeds' keys: their mean s_i / s_1
            ratios = []
            for one in key if isinstance(key, list) else [key]:
                s = by_key[one].load_arrays().get("singular_values")
                ratio = np.full(top_k, np.nan)
                if s is not None and len(s) and s[0] > 0:
                    k = min(top_k, len(s))
                    ratio[:k] = s[:k] / s[0]
                ratios.append(ratio)
            stack = np.stack(ratios)
            counts = np.isfinite(stack).sum(axis=0)
            cols.append(np.where(counts > 0, np.nansum(stack, axis=0) / np.maximum(counts, 1), np.nan))
        data = np.stack(cols, axis=1)
        k = max(1, int(np.max(np.sum(np.isfinite(data), axis=0))))
        steps = g["step"].to_numpy(dtype=float)
        mesh = ax.pcolormesh(np.arange(len(steps) + 1), np.arange(k + 1) + 0.5, data[:k], cmap="magma", vmin=0.0, vmax=1.0, shading="flat")
        ticks = np.unique(np.linspace(0, len(steps) - 1, min(6, len(steps))).round().astype(int))
        ax.set_xticks(ticks + 0.5)
        ax.set_xticklabels([f"{int(steps[t]):,}" for t in ticks], rotation=45, ha="right", fontsize=7)
        ax.set_ylim(k + 0.5, 0.5)
        ax.set_title(str(g["name"].iloc[0]))
        ax.set_xlabel("training step (checkpoint)")
        if i % ncols == 0:
            ax.set_ylabel("index i")
        ax.grid(False)
    if mesh is not None:
        fig.suptitle(f"LM-head singular values s_i / s_1 (i <= {top_k}) over training" + (" (seed groups: mean over seeds)" if _seeded(frame) else ""))
        fig.tight_layout()
        fig.colorbar(mesh, ax=list(axes.flat[: len(models)]), label="s_i / s_1", fraction=0.03, pad=0.02)
    else:
        _empty(axes[0, 0], "no successfully measured checkpoint")
    path = Path(path)
    atomic_savefig(fig, path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_singular_entropy(frame: pd.DataFrame, path: str | Path) -> Path:
    """Fig. 5: singular entropy KL(p || uniform) of the head vs step, coloured by model size."""
    fig, axes = new_figure(width=7.0)
    ax = axes[0, 0]
    models = _models(frame)
    sizes = [float(g["n_params"].dropna().iloc[0]) if g["n_params"].notna().any() else float(i + 1) for i, (_, g) in enumerate(models)]
    if models:
        logn = np.log10(sizes)
        norm = plt.Normalize(vmin=logn.min(), vmax=logn.max() if logn.max() > logn.min() else logn.min() + 1)
        cmap = plt.get_cmap("viridis")
        for (model, g), x in zip(models, logn):
            label = f"{g['name'].iloc[0]} (N={10**x:.3g})"
            ax.plot(g["step"], g["singular_entropy"], color=cmap(norm(x)), lw=1.4, label=label)
            _band(ax, g["step"], g, "singular_entropy", cmap(norm(x)))
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label="log10 parameters")
        ax.legend()
    else:
        _empty(ax, "no successfully measured checkpoint")
    ax.set_xlabel("training step")
    ax.set_ylabel("singular entropy KL(p || uniform) (nats)")
    ax.set_title("Singular entropy of the LM head over training" + _SEED_NOTE * _seeded(frame))
    return save(fig, path)


_SEED_NOTE = "\n(seed groups: line = mean over seeds, band = min-max)"


def _seeded(frame: pd.DataFrame) -> bool:
    return "n_seeds" in frame and bool((frame["n_seeds"] > 1).any())


def draw_sweep_figures(frame: pd.DataFrame, records: Sequence[Record], fit: dict[str, Any] | None, folder: str | Path) -> dict[str, Path]:
    """All five figures into ``folder``; returns {figure id: path}. Models that differ only in their seed
    are drawn as one group each (:func:`seed_groups`: mean line, min-max band)."""
    folder = Path(folder)
    frame = seed_groups(frame)
    return {
        "fig1a": plot_loss_vs_step(frame, folder / FIGURES["fig1a"]),
        "fig1b": plot_loss_vs_compute(frame, fit, folder / FIGURES["fig1b"]),
        "fig3": plot_loss_anisotropy(frame, folder / FIGURES["fig3"]),
        "fig4": plot_spectrum_heatmap(frame, records, folder / FIGURES["fig4"]),
        "fig5": plot_singular_entropy(frame, folder / FIGURES["fig5"]),
    }
