"""Figures of trained families and synthetic languages, drawn from stored records only.

* :func:`plot_training_curves`: held-out loss vs step per model, with the language's true entropy;
* :func:`plot_gap_vs_hidden_size`: final (and best) gap to the true entropy vs hidden size d;
* :func:`plot_head_over_training`: LM-head effective rank and last-layer anisotropy vs step;
* :func:`plot_true_spectra`: normalised singular values of P and of the row-centred log P;
* :func:`plot_family`: the first three for the models of one run directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmsat.figures.style import new_figure, save
from lmsat.store import Record


def _by_hidden_size(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r.results.get("hidden_size", 0), r.key))


def _seed_groups(records: list[Record]) -> list[tuple[str, list[Record]]]:
    """Records that differ only in their seed (model name ``-seedN``, same other inputs), smallest d first:
    (name without the seed, its records). A group of one is a plain run (lmsat.kinds.seeds)."""
    from lmsat.kinds.seeds import SEED_INPUTS, split_seed

    groups: dict[tuple[str, str], list[Record]] = {}
    for rec in _by_hidden_size(records):
        base = split_seed(rec.key)[0]
        settings = repr(sorted((k, repr(v)) for k, v in rec.inputs.items() if k not in (*SEED_INPUTS, "model", "device", "lmsat_version")))
        groups.setdefault((base, settings), []).append(rec)
    return [(base, members) for (base, _), members in groups.items()]


def _plot_group(ax: object, members: list[Record], curve: object, label: str, **style: object) -> None:
    """One line for one run; for a seed group the mean over seeds with a min-max band (lmsat.kinds.seeds.curve_band)."""
    from lmsat.kinds.seeds import curve_band

    curves = [curve(rec) for rec in members]  # type: ignore[operator]
    if len(curves) == 1:
        ax.plot(*curves[0], marker="o", ms=2.5, label=label, **style)  # type: ignore[attr-defined]
        return
    band = curve_band(curves)
    line = ax.plot(band["step"], band["mean"], marker="o", ms=2.5, label=f"{label} (mean of {len(curves)} seeds)", **style)[0]  # type: ignore[attr-defined]
    ax.fill_between(band["step"], band["min"], band["max"], color=line.get_color(), alpha=0.2, lw=0)  # type: ignore[attr-defined]


def _group_label(labels: dict[str, str] | None, members: list[Record], default: str) -> str:
    from lmsat.kinds.seeds import split_seed

    given = (labels or {}).get(str(members[0].path))
    return default if given is None else (split_seed(given)[0] if len(members) > 1 else given)


def _step_axis(ax: object) -> None:
    ax.set_xscale("symlog", linthresh=1)  # type: ignore[attr-defined]
    ax.set_xlim(left=0)  # type: ignore[attr-defined]
    ax.set_xlabel("training step (symlog)")  # type: ignore[attr-defined]


def plot_training_curves(
    records: list[Record], path: str | Path, title: str | None = None, labels: dict[str, str] | None = None
) -> Path:
    """Held-out loss at every checkpoint of each model (nats/token), and the true entropy when known.

    ``labels`` maps a record's folder (``str(record.path)``) to its legend label (default: key and d).
    Models that differ only in their seed are one line: the mean over seeds, with a min-max band.
    """
    fig, axes = new_figure()
    ax = axes[0, 0]
    refs = []
    for base, members in _seed_groups(records):
        label = _group_label(labels, members, f"{base if len(members) > 1 else members[0].key} (d={members[0].results['hidden_size']})")
        _plot_group(ax, members, lambda r: (r.load_arrays()["checkpoint_steps"], r.load_arrays()["eval_loss"]), label)
        refs += [r.results["reference_entropy"] for r in members if r.results.get("reference_entropy") is not None]
    if refs:
        ax.axhline(float(np.mean(refs)), color="k", ls="--", lw=1, label=f"true entropy {np.mean(refs):.3f}")
    _step_axis(ax)
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title(title or "Held-out loss over training")
    ax.legend()
    return save(fig, path)


def plot_gap_vs_hidden_size(
    groups: dict[str, list[Record]],
    path: str | Path,
    rank: int | None = None,
    languages: dict[str, Record] | None = None,
) -> Path:
    """Final and best gap (held-out loss - true entropy, nats/token) vs hidden size, one colour per language.

    With ``languages`` (label -> synth record, same labels as ``groups``), each language's
    ``svd_truncation_gap`` (the gap of its rank-d truncated true logits) is drawn as a thin line.
    """
    fig, axes = new_figure()
    ax = axes[0, 0]
    d_max = 1
    for label, records in groups.items():
        recs = [r for r in _by_hidden_size(records) if r.results.get("final_gap") is not None]
        if not recs:
            continue
        # seeds of one d: mean over seeds, min-max as error bars (lmsat.kinds.seeds.spread)
        from lmsat.kinds.seeds import spread

        d = sorted({r.results["hidden_size"] for r in recs})
        d_max = max(d_max, *d)
        final = [spread([r.results["final_gap"] for r in recs if r.results["hidden_size"] == x]) for x in d]
        best = [spread([r.results.get("best_gap") for r in recs if r.results["hidden_size"] == x]) for x in d]
        n = max(f["n"] for f in final)
        seeds = f" (mean of {n} seeds, bars: min-max)" if n > 1 else ""
        line = ax.errorbar(d, [f["mean"] for f in final], yerr=_min_max(final), marker="o", capsize=3, label=f"{label}: trained, final{seeds}")[0]
        ax.errorbar(d, [b["mean"] for b in best], yerr=_min_max(best), marker="x", ls=":", capsize=3, color=line.get_color(),
                    label=f"{label}: trained, best checkpoint")
        if languages and label in languages:
            bound = languages[label].load_arrays()["svd_truncation_gap"]
            xs = np.arange(1, min(len(bound), 2 * d_max + 1))
            ax.plot(xs, bound[xs], lw=0.8, ls="--", color=line.get_color(), label=f"{label}: rank-d SVD truncation of the true logits")
    if rank is not None:
        ax.axvline(rank, color="k", ls="--", lw=1, label=f"true rank R = {rank}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("hidden size d (or rank d of the truncation)")
    ax.set_ylabel("gap = loss - true entropy (nats/token)")
    ax.set_title("Distance to the best achievable loss")
    ax.legend()
    return save(fig, path)


def _min_max(stats: list[dict[str, float]]) -> np.ndarray:
    """Asymmetric error bars (mean - min, max - mean) from :func:`lmsat.kinds.seeds.spread` results."""
    return np.array([[st["mean"] - st["min"] for st in stats], [st["max"] - st["mean"] for st in stats]])


def plot_head_over_training(records: list[Record], path: str | Path, labels: dict[str, str] | None = None) -> Path:
    """Two panels: LM-head effective rank exp(H(s^2 / sum s^2)) / d, and last-layer anisotropy, vs step.

    ``labels`` maps a record's folder (``str(record.path)``) to its legend label (default: d).
    Models that differ only in their seed are one line: the mean over seeds, with a min-max band.
    """
    from lmsat.kinds.base import as_kind
    from lmsat.kinds.train import TrainRecord

    fig, axes = new_figure(ncols=2)
    left, right = axes[0, 0], axes[0, 1]
    for i, (base, members) in enumerate(_seed_groups(records)):
        d = members[0].results["hidden_size"]
        label = _group_label(labels, members, f"d={d}")
        # effective ranks are stored at training time (docs/methods.md §3)
        rank = lambda r: (r.load_arrays()["checkpoint_steps"], as_kind(r, TrainRecord).head_effective_rank() / r.results["hidden_size"])
        _plot_group(left, members, rank, label, color=f"C{i % 10}")
        _plot_group(right, members, lambda r: (r.load_arrays()["checkpoint_steps"], r.load_arrays()["last_layer_anisotropy"]), label, color=f"C{i % 10}")
    for ax in (left, right):
        _step_axis(ax)
        ax.legend()
    left.set_ylabel("head effective rank / d")
    left.set_ylim(0, 1.02)
    left.set_title("LM-head spectrum (1 = flat, 1/d = one direction)")
    right.set_ylabel("last-layer anisotropy")
    right.set_title("Last-layer anisotropy on held-out text")
    return save(fig, path)


def plot_true_spectra(languages: dict[str, Record], path: str | Path) -> Path:
    """s_i / s_1 of P and of the row-centred log P for each language, log scale, with R marked."""
    fig, axes = new_figure(ncols=2)
    for ax, name, what in ((axes[0, 0], "singular_values_probs", "P (probabilities)"),
                           (axes[0, 1], "singular_values_logits", "log P, rows centred (logits)")):
        for label, rec in languages.items():
            s = rec.load_arrays()[name]
            s = s / s[0]
            ax.plot(np.arange(1, len(s) + 1), np.maximum(s, 1e-17), label=label if f"R={rec.results['rank']}" in label else f"{label} (R={rec.results['rank']})")
        ranks = {rec.results["rank"] for rec in languages.values()}
        for r in ranks:
            ax.axvline(r, color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylim(1e-17, 2)
        ax.set_xlabel("index i")
        ax.set_ylabel("s_i / s_1")
        ax.set_title(f"Singular values of {what}")
        ax.legend()
    return save(fig, path)


def plot_family(records: list[Record], folder: str | Path) -> list[Path]:
    """training_loss.png, training_head.png and (for a synthetic language) training_gap.png in ``folder``."""
    from lmsat.synth.truth import language_for_corpus

    folder = Path(folder)
    figures = [plot_training_curves(records, folder / "training_loss.png"),
               plot_head_over_training(records, folder / "training_head.png")]
    if any(r.results.get("final_gap") is not None for r in records):
        language = language_for_corpus(records[0].inputs["data"]["corpus"]["source"])
        rank = language.results["rank"] if language is not None else None
        label = language.results["family"] if language is not None else "gap"
        figures.append(plot_gap_vs_hidden_size({label: records}, folder / "training_gap.png", rank=rank,
                                               languages={label: language} if language is not None else None))
    return figures
