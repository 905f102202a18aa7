"""What a report holds: sections of tables and figures, built from stored records only.

Each section is drawn from the records of one or more kinds, read through
:mod:`lmsat.kinds` (each kind's own table; any kind not registered there is shown
as a generic table). Figures are re-drawn from the stored numbers in lmsat's one
plotting style and saved as PNG files in the report's companion folder; no
measurement is recomputed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from lmsat import kinds
from lmsat.kinds import anisotropy as anisotropy_kind
from lmsat.kinds import downstream as downstream_kind
from lmsat.kinds import head as head_kind
from lmsat.kinds import ngram as ngram_kind
from lmsat.kinds import rank_probe as rank_probe_kind
from lmsat.kinds import saturation as saturation_kind
from lmsat.kinds import scaling_fit as scaling_fit_kind
from lmsat.kinds import synth as synth_kind
from lmsat.kinds import train as train_kind
from lmsat.kinds.base import as_kind
from lmsat.kinds.ngram import NgramRecord
from lmsat.kinds.rank_probe import RankProbeRecord, RankProbeRefRecord
from lmsat.kinds.sweep import SweepRecord
from lmsat.report import diagnosis as dg
from lmsat.report.sections import Figure, Section, Table
from lmsat.store import Record

# Kinds with their own section (every registered kind, lmsat.kinds.REGISTRY, in its order); any other
# kind present comes after, as a generic table.
KNOWN_KINDS = tuple(kinds.REGISTRY)
# Intermediate records another kind summarises (the n-gram counts behind each ngram record): not shown.
INTERMEDIATE_KINDS = tuple(k.name for k in kinds.REGISTRY.values() if k.intermediate and k.name != "downstream")


def fmt_cell(value: Any) -> str:
    """How a number appears in every report table: ints as is, floats to 4 significant digits."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.4g}"
    return str(value)


# --- tables -----------------------------------------------------------------------------------


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def generic_table(records: list[Record], input_fields: tuple[str, ...] = ("model", "revision")) -> pd.DataFrame:
    """key, a few identifying inputs and every scalar result of each record."""
    rows = []
    for rec in records:
        row: dict[str, Any] = {"key": rec.key}
        for f in input_fields:
            if f in rec.inputs and not isinstance(rec.inputs[f], (dict, list)):
                row[f] = rec.inputs[f]
        row.update(_flat(rec.results))
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.dropna(axis=1, how="all") if len(frame) else frame


def diagnosis_frame(diags: list[dg.ModelDiagnosis]) -> pd.DataFrame:
    """One row per (model, finding): the verdict and status; the summary table of the report."""
    rows = []
    for m in diags:
        for f in m.findings:
            rows.append({"model": m.model, "d": m.hidden_size, "finding": f.topic, "status": f.status, "verdict": f.verdict})
    return pd.DataFrame(rows)


def summary_frame(diags: list[dg.ModelDiagnosis]) -> pd.DataFrame:
    """One row per model: d, the data dimension(s) and the overall status (printed by `lmsat demo`)."""
    rows = []
    for m in diags:
        row: dict[str, Any] = {"model": m.model, "d": m.hidden_size}
        for f in m.findings:
            v = f.values
            if f.id == dg.KNOWN_RANK:
                row["known rank"] = v.get("generator_rank")
                if v.get("final_gap") is not None:
                    row["gap to true entropy"] = v["final_gap"]
            if f.id == dg.DATA_DIMENSION and "dim@0.5" not in row:
                row["dim@0.5"] = _dimension(v, "0.5")
                row["dim@0.1"] = _dimension(v, "0.1")
            if f.id == dg.RANK_PROBE:
                row["probe rank needed"] = v.get("rank_needed")
            if f.id == dg.SATURATION:
                row["loss rise"] = v.get("relative_rise")
        row["bottleneck"] = m.overall
        rows.append(row)
    return pd.DataFrame(rows)


def seed_summary_section(summary: pd.DataFrame) -> Section | None:
    """The summary's models that differ only in their seed (``-seedN``, lmsat.kinds.seeds) as one row per group:
    each number as mean ± sd over the seeds, the bottleneck verdicts as a count per verdict. None without seed groups."""
    from lmsat.kinds.seeds import grouped_table, has_seed_groups

    if not len(summary) or not has_seed_groups([str(m) for m in summary["model"]]):
        return None
    numbers = [c for c in summary.columns if c not in ("model", "d", "bottleneck") and pd.api.types.is_numeric_dtype(summary[c])]
    frame = summary.copy()
    verdicts = sorted({str(v) for v in frame["bottleneck"].dropna()})
    for v in verdicts:  # k/n of the seeds with each verdict
        frame[f"bottleneck: {v}"] = frame["bottleneck"].astype(str) == v
    table = grouped_table(frame, "model", ["d"], numbers, {}, counts=[f"bottleneck: {v}" for v in verdicts])
    return Section("seeds", "Seeds: the summary over seed groups",
                   "Models that differ only in their seed, as one row per group: each number as mean ± sd over the seeds "
                   "(the value itself when every seed has it), each verdict as the number of seeds that reach it.",
                   tables=[Table("summary_seeds", "Summary over seeds", table)])


def _dimension(values: dict[str, Any], threshold: str) -> Any:
    """A data-dimension finding's dimension at a threshold as shown: exact, "> k" when only bounded, "n/a" when unknown."""
    if f"dim_{threshold}" not in values:  # the "no n-gram result" finding
        return None
    dim = values[f"dim_{threshold}"]
    if dim is None:
        return "n/a"
    return dim if values[f"dim_{threshold}_exact"] else f"> {dim}"


# --- figures ----------------------------------------------------------------------------------


def _plot_lines(path: Path, title: str, xlabel: str, ylabel: str, series: list[tuple[str, np.ndarray, np.ndarray]],
                vlines: list[tuple[float, str]] = (), logx: bool = False, ylim: tuple[float, float] | None = None,
                hlines: list[tuple[float, str]] = ()) -> Path:
    from lmsat.figures.style import new_figure, save

    fig, axes = new_figure()
    ax = axes[0, 0]
    for label, x, y in series:
        ax.plot(x, y, marker="o" if len(x) <= 40 else None, ms=3, label=label)
    for i, (x, label) in enumerate(vlines):  # labels of neighbouring lines step down so they never overlap
        ax.axvline(x, ls="--", lw=1, color="0.35")
        ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), xytext=(3, -12 - 11 * (i % 3)), textcoords="offset points", fontsize=8, color="0.25")
    for i, (y, label) in enumerate(sorted(hlines)):  # ... and neighbouring horizontal ones alternate below/above
        ax.axhline(y, ls=":", lw=1, color="0.35")
        ax.annotate(label, (0, y), xycoords=("axes fraction", "data"), xytext=(4, 3 if i % 2 else -11), textcoords="offset points", fontsize=8, color="0.25")
    if logx:
        ax.set_xscale("symlog" if any(np.nanmin(x) <= 0 for _, x, _ in series if len(x)) else "log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels ("3x10^0 4x10^0") ran into each other
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if series:
        ax.legend()
    return save(fig, path)


def _models_d(diags: list[dg.ModelDiagnosis]) -> list[tuple[float, str]]:
    seen: dict[int, list[str]] = {}
    for m in diags:
        if m.hidden_size:
            seen.setdefault(m.hidden_size, []).append(m.model)
    return [(d, f"d={d}") for d in sorted(seen)]


def ngram_figure(records: list[Record], diags: list[dg.ModelDiagnosis], path: Path) -> Path | None:
    series = []
    for rec in (as_kind(r, NgramRecord) for r in records):
        curve = rec.w_error_curve()
        if curve is not None:
            series.append((f"{rec.corpus} (n={rec.n or '?'})", np.arange(len(curve)), curve))
    if not series:
        return None
    return _plot_lines(path, "Data dimension: W-error of the n-gram matrix", "dimension k of the best rank-k approximation",
                       "W-error(k) = |P - P_k|_F / |P|_F", series, vlines=_models_d(diags), ylim=(0, 1.02),
                       hlines=[(0.5, "0.5"), (0.1, "0.1")])


def rank_probe_figure(probes: list[Record], refs: list[Record], diags: list[dg.ModelDiagnosis], path: Path) -> Path | None:
    by_model: dict[str, list[RankProbeRecord]] = {}
    for rec in (as_kind(r, RankProbeRecord) for r in probes):
        by_model.setdefault(rec.model, []).append(rec)
    series, hlines = [], []
    for name, recs in sorted(by_model.items()):
        pts = rank_probe_kind.points(recs)
        if pts:
            series.append((name, np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)))
    for rec in (as_kind(r, RankProbeRefRecord) for r in refs):
        if not rec.is_final:
            continue
        loss = rec.validation_loss
        if loss is not None:
            what = "own head" if rec.head == "own" else "full rank"
            hlines.append((loss, f"{what} ({rec.model})"))
    if not series:
        return None
    return _plot_lines(path, "Rank-constrained heads on frozen representations", "rank r of the head W = AB",
                       "validation loss (nats/token)", series, vlines=_models_d(diags), logx=True, hlines=hlines)


def evidence_figure(diag: dg.ModelDiagnosis, by_key: dict[tuple[str, str], Record], records: dict[str, list[Record]], path: Path) -> Path | None:
    """One multi-panel figure per model: each finding's evidence, drawn from the records it names."""
    from lmsat.figures.style import new_figure, save

    panels: list[Callable[[Any], None]] = []
    d = diag.hidden_size
    for f in diag.findings:
        recs = [_typed(by_key[s]) for s in f.sources if s in by_key]
        if f.id == dg.DATA_DIMENSION and recs:
            rec = recs[0]
            curve = rec.w_error_curve()

            def panel(ax: Any, curve: np.ndarray = curve, rec: NgramRecord = rec) -> None:
                ax.plot(np.arange(len(curve)), curve, label=rec.corpus)
                for y in dg.W_ERROR_THRESHOLDS:
                    ax.axhline(y, ls=":", lw=1, color="0.4")
                if d is not None:
                    ax.axvline(d, ls="--", color="C3", label=f"d = {d}")
                ax.set(xlabel="dimension k", ylabel="data W-error(k)", title="Data dimension vs d", ylim=(0, 1.02))
                ax.legend()

            if curve is not None:
                panels.append(panel)
        elif f.id == dg.HEAD_SPECTRUM and recs:
            s = recs[0].singular_values()
            if s is not None:
                def panel(ax: Any, s: np.ndarray = s) -> None:
                    ax.plot(np.arange(1, len(s) + 1), s / s[0])
                    ax.set_yscale("log")
                    ax.set(xlabel="index i", ylabel="s_i / s_1", title="Head singular spectrum")
                panels.append(panel)
        elif f.id == dg.ANISOTROPY and recs:
            layers = recs[0].layers or []

            def panel(ax: Any, layers: list = layers) -> None:
                ax.plot([x["depth"] for x in layers], [x["anisotropy"] for x in layers], marker="o", ms=3)
                ax.set(xlabel="normalised depth", ylabel="anisotropy", title="Anisotropy by layer", ylim=(min(-0.05, ax.get_ylim()[0]), 1.02))
            panels.append(panel)
        elif f.id == dg.SATURATION and recs:
            s = dg.sweep_series([r for r in recs if isinstance(r, SweepRecord)])

            def panel(ax: Any, s: dict = s, f: dg.Finding = f) -> None:
                ok = np.isfinite(s["loss"])
                ax.plot(s["step"][ok], s["loss"][ok], marker="o", ms=3, color="C0", label="loss")
                ax.set(xlabel="training step", ylabel="loss (nats/token)", title="Saturation, collapse, anisotropy")
                ax2 = ax.twinx()
                ax2.set_ylabel("singular entropy (nats), anisotropy")
                for col, c in (("singular_entropy", "C1"), ("last_layer_anisotropy", "C2")):
                    okc = np.isfinite(s[col])
                    if okc.any():
                        ax2.plot(s["step"][okc], s[col][okc], ls="--", color=c, label=col.replace("_", " "))
                for key, c in (("best_step", "C0"), ("collapse_step", "C1")):
                    if f.values.get(key) is not None:
                        ax.axvline(f.values[key], color=c, lw=0.8, ls=":")
                h1, l1 = ax.get_legend_handles_labels()
                h2, l2 = ax2.get_legend_handles_labels()
                ax.legend(h1 + h2, l1 + l2)
            panels.append(panel)
        elif f.id == dg.RANK_PROBE:
            pts = dg.rank_probe_points(recs)

            def panel(ax: Any, pts: list = pts, f: dg.Finding = f) -> None:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4)
                full = f.values.get("reference_loss")
                if full is not None:
                    ax.axhline(full, ls=":", color="0.4", label="full rank")
                if d is not None:
                    ax.axvline(d, ls="--", color="C3", label=f"d = {d}")
                ax.set_xscale("log", base=2)
                ax.set(xlabel="rank r", ylabel="validation loss", title="Rank probe")
                ax.legend()
            if pts:
                panels.append(panel)
    if not panels:
        return None
    ncols = min(2, len(panels))  # two panels a row: three side by side shrank their text below readable size
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=4.3, height=3.2)
    for ax, panel in zip(axes.flat, panels):
        panel(ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{diag.model}: evidence", fontsize=11)
    return save(fig, path)


def _typed(rec: Record) -> Any:
    return kinds.typed(rec) if rec.kind in kinds.REGISTRY else rec


# --- sections ---------------------------------------------------------------------------------


def build_sections(records: dict[str, list[Record]], diags: list[dg.ModelDiagnosis], folder: Path) -> list[Section]:
    """Every section the records support, figures saved under ``folder``."""
    from lmsat.figures.models import plot_anisotropy_by_depth, plot_head_spectrum, plot_head_w_error

    sections: list[Section] = []
    r = records
    t = {k: [kinds.typed(x) for x in recs] for k, recs in records.items() if k in kinds.REGISTRY}  # typed views

    if r.get("synth") or r.get("train"):
        sec = Section("ground-truth", "Ground truth: synthetic languages and trained models",
                      "Synthetic languages whose next-token distributions have a known rank and entropy, and the small models trained on them. "
                      "The entropy is the lowest loss any model can reach; the rank is the head dimension needed to reach it.")
        from lmsat.figures.training import plot_gap_vs_hidden_size, plot_training_curves, plot_true_spectra

        if r.get("synth"):
            languages = {f"{typed.family or typed.key} R={typed.exact_rank}": rec for rec, typed in zip(r["synth"], t["synth"])}
            if all("singular_values_probs" in rec.arrays for rec in r["synth"]):
                sec.figures.append(Figure("fig-true-spectra", "True spectra", plot_true_spectra(languages, folder / "true_spectra.png"),
                                          "Singular values of each language's P and of its row-centred log P (the logits), rank R marked."))
            sec.tables.append(Table("synth", "Synthetic languages (generator truth)", synth_kind.table(t["synth"])))
        if r.get("train"):
            trains = [rec for rec in r["train"] if "checkpoint_steps" in rec.arrays]
            if trains:
                sec.figures.append(Figure("fig-training", "Training curves", plot_training_curves(trains, folder / "training_loss.png"),
                                          "Held-out loss of each trained model at every checkpoint; dashed: the language's true entropy."))
                if any(as_kind(rec, train_kind.TrainRecord).final_gap is not None for rec in trains):
                    rank = next((lang.exact_rank for lang in t.get("synth", [])), None)
                    sec.figures.append(Figure("fig-gap", "Gap to the true entropy",
                                              plot_gap_vs_hidden_size({"models": trains}, folder / "training_gap.png", rank=rank),
                                              "Final and best held-out loss minus the true entropy, vs hidden size d; dashed: the true rank R."))
            sec.tables.append(Table("train", "Trained models", train_kind.table(t["train"])))
        sections.append(sec)

    if r.get("ngram"):
        sec = Section("ngram", "Data dimension: n-gram W-error",
                      "For a corpus, P holds one row per observed (n-1)-token context: its empirical next-token distribution. "
                      "W-error(k) = sqrt(sum_{i>k} s_i^2) / |P|_F is the smallest relative error of any rank-k approximation "
                      "(Eckart-Young-Mirsky). Dashed lines: the hidden sizes d of the models in this report.")
        p = ngram_figure(r["ngram"], diags, folder / "ngram_w_error.png")
        if p:
            sec.figures.append(Figure("fig-ngram", "n-gram W-error", p, "W-error of each corpus's n-gram matrix vs dimension k."))
        sec.tables.append(Table("ngram", "Data dimension per corpus", ngram_kind.table(t["ngram"])))
        sections.append(sec)

    if r.get("anisotropy"):
        sec = Section("anisotropy", "Anisotropy by layer",
                      "Anisotropy = mean cosine similarity between the hidden states of distinct tokens, per layer "
                      "(0 = isotropic, 1 = all in one direction); depth 0 is the embedding output, 1 the last layer (study Fig. 2).")
        p = plot_anisotropy_by_depth(r["anisotropy"], folder / "anisotropy.png")
        sec.figures.append(Figure("fig-anisotropy", "Anisotropy by depth", p, "Anisotropy vs normalised layer depth, one line per model."))
        sec.tables.append(Table("anisotropy", "Anisotropy per layer", anisotropy_kind.table(t["anisotropy"])))
        sections.append(sec)

    if r.get("head"):
        heads = [rec for rec in r["head"] if "singular_values" in rec.arrays]
        sec = Section("head", "LM-head spectrum, singular entropy and W-error",
                      "Singular values s of the head W (V x d). Singular entropy = KL(p || uniform) = ln d - H(p) with p = s^2 / sum s^2 "
                      "(0 = flat spectrum, ln d = rank one); effective rank = exp H(p); W-error(r) = the relative Frobenius error of the best rank-r "
                      "approximation of W (study Fig. 4-5).")
        if heads:
            sec.figures.append(Figure("fig-head-spectrum", "Head spectrum", plot_head_spectrum(heads, folder / "head_spectrum.png"),
                                      "Normalised singular values s_i / s_1 (log scale)."))
            sec.figures.append(Figure("fig-head-w-error", "Head W-error", plot_head_w_error(heads, folder / "head_w_error.png"),
                                      "W-error of the best rank-r approximation of the head vs r."))
        sec.tables.append(Table("head", "LM-head spectrum summary", head_kind.table(t["head"])))
        sections.append(sec)

    if r.get("sweep") or r.get("saturation") or r.get("scaling_fit"):
        has_fit = bool(r.get("scaling_fit"))  # the scaling fit is promised (title, Fig. 1b) only when a fit record exists
        sec = Section("sweep", "Checkpoint sweep: saturation" + (", scaling fit" if has_fit else ""),
                      "Loss, head singular entropy and last-layer anisotropy of every checkpoint on one fixed token sample. Saturation = the loss "
                      "rises after its minimum (relative rise = final / best - 1)."
                      + (" Scaling fit: L(N, T) = E + A / N^alpha + B / T^beta (study Fig. 1, 3, 4, 5)." if has_fit else
                         " No scaling fit in these runs (`lmsat scaling-fit RUN_DIR` adds one, and the study's Fig. 1b with it) (study Fig. 1a, 3, 4, 5)."))
        if r.get("sweep"):
            from lmsat.figures.sweep import draw_sweep_figures
            from lmsat.kinds import sweep as sweep_kind

            fit = t["scaling_fit"][0].results() if t.get("scaling_fit") else None
            drawn = draw_sweep_figures(sweep_kind.frame(t["sweep"]), r["sweep"], fit, folder)
            captions = {"fig1a": "Loss vs training step (study Fig. 1a); stars: best checkpoints.",
                        "fig1b": "Loss vs compute 6NT with the fitted scaling law (study Fig. 1b).",
                        "fig3": "Loss over training coloured by last-layer anisotropy (study Fig. 3).",
                        "fig4": "Normalised head spectrum s_i / s_1 over training (study Fig. 4).",
                        "fig5": "Singular entropy of the head over training (study Fig. 5)."}
            for fid, path in drawn.items():
                if fid == "fig1b" and fit is None:
                    continue
                sec.figures.append(Figure(f"fig-{fid}", captions[fid].split(" (")[0], path, captions[fid]))
            sec.tables.append(Table("sweep", "Checkpoints", sweep_kind.table(t["sweep"])))
        if r.get("saturation"):
            sec.tables.append(Table("saturation", "Saturation per model", saturation_kind.table(t["saturation"])))
        if r.get("scaling_fit"):
            sec.tables.append(Table("scaling_fit", "Scaling-law fit", scaling_fit_kind.table(t["scaling_fit"])))
        sections.append(sec)

    if r.get("rank_probe") or r.get("rank_probe_ref"):
        sec = Section("rank-probe", "Rank-constrained heads (rank probe)",
                      "The model is frozen and its head replaced by W = AB of rank r, trained on next-token prediction; the table gives the "
                      "validation loss per rank, the dotted line the full-rank head (study Fig. 6). When the model's own head beats every probe head, "
                      "the full-rank one included, that is expected: the own head was trained together with the whole model on its full "
                      "training data, the probe heads on a small sample with the model frozen and a short budget. Compare probe ranks "
                      "with each other (same recipe), not with the own head.")
        p = rank_probe_figure(r.get("rank_probe", []), r.get("rank_probe_ref", []), diags, folder / "rank_probe.png")
        if p:
            sec.figures.append(Figure("fig-rank-probe", "Rank probe", p, "Validation loss vs rank r; dashed: hidden sizes d."))
        if r.get("rank_probe"):
            sec.tables.append(Table("rank_probe", "Rank-probe results", rank_probe_kind.table(t["rank_probe"])))
        if r.get("rank_probe_ref"):
            sec.tables.append(Table("rank_probe_ref", "References: full-rank trained head and the model's own head", rank_probe_kind.table(t["rank_probe_ref"])))
        sections.append(sec)

    if r.get("downstream") or r.get("downstream_table"):
        sec = Section("downstream", "Downstream evaluation", "Zero-shot lm-evaluation-harness tasks per checkpoint (study Table 1).")
        if r.get("downstream_table"):
            sec.tables.append(Table("downstream_table", "Downstream tasks: best vs final checkpoint", downstream_kind.table(t["downstream_table"])))
        if r.get("downstream"):
            sec.tables.append(Table("downstream", "Downstream tasks", generic_table(r["downstream"], ("model", "revision"))))
        sections.append(sec)

    if r.get("causality"):
        from lmsat.report.causality import causality_sections

        sections += causality_sections(t["causality"], folder)

    others = sorted(k for k in r if k not in KNOWN_KINDS and k not in INTERMEDIATE_KINDS and r[k])
    for kind in others:
        sections.append(Section(f"kind-{kind}", f"Other results: {kind}", f"Records of kind '{kind}', as stored.",
                                tables=[Table(kind, kind, generic_table(r[kind]))]))
    return sections
