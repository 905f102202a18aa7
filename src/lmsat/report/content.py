"""What a report holds: sections of tables and figures, built from stored records only.

Each section is drawn from the records of one or more kinds (anisotropy, head,
sweep, saturation, scaling_fit, rank_probe(_ref), ngram, synth, train,
downstream, and any other kind as a generic table). Figures are re-drawn from
the stored numbers in lmsat's one plotting style and saved as PNG files in the
report's companion folder; no measurement is recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from lmsat.report import diagnosis as dg
from lmsat.store import Record

# Kinds in the order the report shows them; any other kind present comes after, as a generic table.
KNOWN_KINDS = ("synth", "train", "ngram", "anisotropy", "head", "sweep", "saturation", "scaling_fit",
               "rank_probe", "rank_probe_ref", "downstream")
# Intermediate records another kind summarises (the n-gram counts behind each ngram record): not shown.
INTERMEDIATE_KINDS = ("ngram_counts",)


@dataclass
class Table:
    id: str
    title: str
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Figure:
    id: str
    title: str
    path: Path
    caption: str = ""


@dataclass
class Section:
    id: str
    title: str
    intro: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


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


def anisotropy_frame(records: list[Record]) -> pd.DataFrame:
    rows = []
    for rec in records:
        for layer in rec.results.get("layers", []):
            rows.append({"model": dg.model_name(rec.inputs), "revision": rec.inputs.get("revision"), "layer": layer["layer"],
                         "depth": layer["depth"], "anisotropy": layer["anisotropy"], "mean_norm": layer.get("mean_norm")})
    return pd.DataFrame(rows)


def head_frame(records: list[Record]) -> pd.DataFrame:
    cols = ("singular_entropy", "singular_entropy_linear", "max_singular_entropy", "effective_rank", "effective_rank_linear",
            "w_error_d8", "w_error_d4", "w_error_d2")
    rows = []
    for rec in records:
        row = {"model": dg.model_name(rec.inputs), "revision": rec.inputs.get("revision"), "d": dg.hidden_size_of(rec),
               "V": (rec.results.get("head") or {}).get("vocab_rows")}
        row.update({c: rec.results.get(c) for c in cols})
        row["tied"] = (rec.results.get("head") or {}).get("tied")
        rows.append(row)
    return pd.DataFrame(rows)


def ngram_frame(records: list[Record]) -> pd.DataFrame:
    rows = []
    for rec in records:
        d5, e5 = dg.dimension_at(rec, 0.5)
        d1, e1 = dg.dimension_at(rec, 0.1)
        row = {"corpus": dg._corpus_label(rec), "n": dg._first(rec.inputs, "n", "order"),
               "tokenizer": dg._first(rec.inputs, "tokenizer", "tokenizer_name")}
        for k in ("n_tokens", "n_contexts", "vocab_size", "frobenius_norm", "top_k"):
            v = dg._first(rec.results, k)
            if v is None:
                v = dg._first(rec.inputs, k)
            if v is not None and not isinstance(v, (dict, list)):
                row[k] = v
        row["dim at W-error 0.5"] = d5 if e5 else (f"> {d5}" if d5 is not None else None)
        row["dim at W-error 0.1"] = d1 if e1 else (f"> {d1}" if d1 is not None else None)
        rows.append(row)
    return pd.DataFrame(rows)


def synth_frame(records: list[Record]) -> pd.DataFrame:
    """The generator truth of each language: family, V, C, R and the entropies (nats/token)."""
    cols = ("family", "vocab", "contexts", "rank", "order", "temperature", "seed", "n_tokens", "expected_entropy", "true_entropy",
            "heldout_true_entropy", "unigram_entropy", "numerical_rank_logits", "numerical_rank_probs", "w_error_probs_at_rank")
    rows = [{"language": rec.key, **{c: rec.results.get(c) for c in cols if c in rec.results}} for rec in records]
    frame = pd.DataFrame(rows)
    return frame.dropna(axis=1, how="all") if len(frame) else frame


def train_frame(records: list[Record]) -> pd.DataFrame:
    """One row per trained model: d, parameters, steps, held-out losses (nats/token) and the gap to the true entropy."""
    cols = ("hidden_size", "n_params", "steps", "tokens", "final_eval_loss", "best_eval_loss", "best_step", "relative_rise",
            "reference_entropy", "final_gap", "final_gap_standard_error", "best_gap", "final_head_effective_rank", "final_last_layer_anisotropy")
    rows = [{"model": rec.key, **{c: rec.results.get(c) for c in cols if c in rec.results}} for rec in records]
    frame = pd.DataFrame(rows)
    if len(frame) and "hidden_size" in frame:
        frame = frame.sort_values("hidden_size").reset_index(drop=True)
    return frame.dropna(axis=1, how="all") if len(frame) else frame


def sweep_frame(records: list[Record]) -> pd.DataFrame:
    rows = []
    for rec in records:
        s = dg.sweep_series([rec])
        rows.append({"model": dg.model_name(rec.inputs), "revision": rec.inputs.get("revision"),
                     "step": s["step"][0] if len(s["step"]) else None,
                     "loss": s["loss"][0] if len(s["loss"]) else None,
                     "last_layer_anisotropy": s["last_layer_anisotropy"][0] if len(s["step"]) else None,
                     "singular_entropy": s["singular_entropy"][0] if len(s["step"]) else None})
    frame = pd.DataFrame(rows)
    return frame.sort_values(["model", "step"]).reset_index(drop=True) if len(frame) else frame


def rank_probe_frame(records: list[Record]) -> pd.DataFrame:
    """Final runs of the rank probe (and references), as ``lmsat rank-probe`` tabulates them; search runs left out."""
    rows = []
    for rec in records:
        res = rec.results
        if res.get("stage", "final") != "final" and res.get("head") != "own":
            continue
        rows.append({
            "model": dg.model_name(rec.inputs), "d": dg.hidden_size_of(rec), "head": res.get("head"),
            "rank": dg._int(dg._first(res, "rank", "r")) or dg._int(dg._first(rec.inputs, "rank", "r")),
            "lr": dg._first(res, "lr") if dg._first(res, "lr") is not None else rec.inputs.get("lr"),
            "loss": dg._first(res, "loss", "val_loss", "validation_loss"),
            "loss_se": res.get("loss_se"),
            "accuracy": dg._first(res, "accuracy", "val_accuracy"),
            "w_error": res.get("w_error"), "tokens_seen": res.get("tokens_seen"), "eval_tokens": res.get("eval_tokens"),
        })
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(["model", "rank"], na_position="last").reset_index(drop=True)
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
            if f.topic == "known rank":
                row["known rank"] = f.numbers.get("generator rank")
                if f.numbers.get("final gap to true entropy (nats/token)") is not None:
                    row["gap to true entropy"] = f.numbers["final gap to true entropy (nats/token)"]
            if f.topic == "data dimension" and "dim@0.5" not in row:
                row["dim@0.5"] = f.numbers.get("data dimension at W-error 0.5")
                row["dim@0.1"] = f.numbers.get("data dimension at W-error 0.1")
            if f.topic == "rank probe":
                row["probe rank needed"] = f.numbers.get(f"smallest rank within {dg.PROBE_TOLERANCE:.2g} nats of full rank")
            if f.topic == "saturation over training":
                row["loss rise"] = f.numbers.get("relative rise final/best - 1")
        row["bottleneck"] = m.overall
        rows.append(row)
    return pd.DataFrame(rows)


# --- figures ----------------------------------------------------------------------------------


def _plot_lines(path: Path, title: str, xlabel: str, ylabel: str, series: list[tuple[str, np.ndarray, np.ndarray]],
                vlines: list[tuple[float, str]] = (), logx: bool = False, ylim: tuple[float, float] | None = None,
                hlines: list[tuple[float, str]] = ()) -> Path:
    from lmsat.figures.style import new_figure, save

    fig, axes = new_figure()
    ax = axes[0, 0]
    for label, x, y in series:
        ax.plot(x, y, marker="o" if len(x) <= 40 else None, ms=3, label=label)
    for x, label in vlines:
        ax.axvline(x, ls="--", lw=1, color="0.35")
        ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points", fontsize=8, color="0.25")
    for y, label in hlines:
        ax.axhline(y, ls=":", lw=1, color="0.35")
        ax.annotate(label, (0, y), xycoords=("axes fraction", "data"), xytext=(4, 3), textcoords="offset points", fontsize=8, color="0.25")
    if logx:
        ax.set_xscale("symlog" if any(np.nanmin(x) <= 0 for _, x, _ in series if len(x)) else "log")
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
    for rec in records:
        curve = dg.w_error_curve_of(rec)
        if curve is not None:
            series.append((f"{dg._corpus_label(rec)} (n={dg._first(rec.inputs, 'n', 'order') or '?'})", np.arange(len(curve)), curve))
    if not series:
        return None
    return _plot_lines(path, "Data dimension: W-error of the n-gram matrix", "dimension k of the best rank-k approximation",
                       "W-error(k) = |P - P_k|_F / |P|_F", series, vlines=_models_d(diags), ylim=(0, 1.02),
                       hlines=[(0.5, "0.5"), (0.1, "0.1")])


def rank_probe_figure(probes: list[Record], refs: list[Record], diags: list[dg.ModelDiagnosis], path: Path) -> Path | None:
    by_model: dict[str, list[Record]] = {}
    for rec in probes:
        by_model.setdefault(dg.model_name(rec.inputs), []).append(rec)
    series, hlines = [], []
    for name, recs in sorted(by_model.items()):
        pts = dg.rank_probe_points(recs)
        if pts:
            series.append((name, np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)))
    for rec in refs:
        if rec.results.get("stage", "final") != "final" and rec.results.get("head") != "own":
            continue
        loss = dg._num(dg._first(rec.results, "loss", "val_loss", "validation_loss"))
        if loss is not None:
            what = "own head" if rec.results.get("head") == "own" else "full rank"
            hlines.append((loss, f"{what} ({dg.model_name(rec.inputs)})"))
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
        recs = [by_key[s] for s in f.sources if s in by_key]
        if f.topic == "data dimension" and recs:
            rec = recs[0]
            curve = dg.w_error_curve_of(rec)

            def panel(ax: Any, curve: np.ndarray = curve, rec: Record = rec) -> None:
                ax.plot(np.arange(len(curve)), curve, label=dg._corpus_label(rec))
                for y in dg.W_ERROR_THRESHOLDS:
                    ax.axhline(y, ls=":", lw=1, color="0.4")
                if d is not None:
                    ax.axvline(d, ls="--", color="C3", label=f"d = {d}")
                ax.set(xlabel="dimension k", ylabel="data W-error(k)", title="Data dimension vs d", ylim=(0, 1.02))
                ax.legend()

            if curve is not None:
                panels.append(panel)
        elif f.topic == "head spectrum" and recs:
            s = recs[0].load_arrays().get("singular_values")
            if s is not None:
                def panel(ax: Any, s: np.ndarray = s) -> None:
                    ax.plot(np.arange(1, len(s) + 1), s / s[0])
                    ax.set_yscale("log")
                    ax.set(xlabel="index i", ylabel="s_i / s_1", title="Head singular spectrum")
                panels.append(panel)
        elif f.topic == "last-layer anisotropy" and recs:
            layers = recs[0].results.get("layers", [])

            def panel(ax: Any, layers: list = layers) -> None:
                ax.plot([x["depth"] for x in layers], [x["anisotropy"] for x in layers], marker="o", ms=3)
                ax.set(xlabel="normalised depth", ylabel="anisotropy", title="Anisotropy by layer", ylim=(min(-0.05, ax.get_ylim()[0]), 1.02))
            panels.append(panel)
        elif f.topic == "saturation over training" and recs:
            s = dg.sweep_series(recs)

            def panel(ax: Any, s: dict = s, f: dg.Finding = f) -> None:
                ok = np.isfinite(s["loss"])
                ax.plot(s["step"][ok], s["loss"][ok], marker="o", ms=3, color="C0", label="loss")
                ax.set(xlabel="training step", ylabel="loss (nats/token)", title="Saturation, collapse, anisotropy")
                ax2 = ax.twinx()
                for col, c in (("singular_entropy", "C1"), ("last_layer_anisotropy", "C2")):
                    okc = np.isfinite(s[col])
                    if okc.any():
                        ax2.plot(s["step"][okc], s[col][okc], ls="--", color=c, label=col.replace("_", " "))
                for key, c in (("best step", "C0"), ("spectrum-collapse step", "C1")):
                    if f.numbers.get(key) is not None:
                        ax.axvline(f.numbers[key], color=c, lw=0.8, ls=":")
                h1, l1 = ax.get_legend_handles_labels()
                h2, l2 = ax2.get_legend_handles_labels()
                ax.legend(h1 + h2, l1 + l2)
            panels.append(panel)
        elif f.topic == "rank probe":
            pts = dg.rank_probe_points(recs)

            def panel(ax: Any, pts: list = pts, f: dg.Finding = f) -> None:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4)
                full = next((v for k, v in f.numbers.items() if k.startswith("loss of ")), None)
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
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = new_figure(ncols=ncols, nrows=nrows, width=4.3, height=3.2)
    for ax, panel in zip(axes.flat, panels):
        panel(ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{diag.model}: evidence", fontsize=11)
    return save(fig, path)


# --- sections ---------------------------------------------------------------------------------


def build_sections(records: dict[str, list[Record]], diags: list[dg.ModelDiagnosis], folder: Path) -> list[Section]:
    """Every section the records support, figures saved under ``folder``."""
    from lmsat.figures.models import plot_anisotropy_by_depth, plot_head_spectrum, plot_head_w_error

    sections: list[Section] = []
    r = records

    if r.get("synth") or r.get("train"):
        sec = Section("ground-truth", "Ground truth: synthetic languages and trained models",
                      "Synthetic languages whose next-token distributions have a known rank and entropy, and the small models trained on them. "
                      "The entropy is the lowest loss any model can reach; the rank is the head dimension needed to reach it.")
        from lmsat.figures.training import plot_gap_vs_hidden_size, plot_training_curves, plot_true_spectra

        if r.get("synth"):
            languages = {f"{rec.results.get('family', rec.key)} R={rec.results.get('rank')}": rec for rec in r["synth"]}
            if all("singular_values_probs" in rec.arrays for rec in r["synth"]):
                sec.figures.append(Figure("fig-true-spectra", "True spectra", plot_true_spectra(languages, folder / "true_spectra.png"),
                                          "Singular values of each language's P and of its row-centred log P (the logits), rank R marked."))
            sec.tables.append(Table("synth", "Synthetic languages (generator truth)", synth_frame(r["synth"])))
        if r.get("train"):
            trains = [rec for rec in r["train"] if "checkpoint_steps" in rec.arrays]
            if trains:
                sec.figures.append(Figure("fig-training", "Training curves", plot_training_curves(trains, folder / "training_loss.png"),
                                          "Held-out loss of each trained model at every checkpoint; dashed: the language's true entropy."))
                if any(rec.results.get("final_gap") is not None for rec in trains):
                    rank = next((rec.results.get("rank") for rec in r.get("synth", [])), None)
                    sec.figures.append(Figure("fig-gap", "Gap to the true entropy",
                                              plot_gap_vs_hidden_size({"models": trains}, folder / "training_gap.png", rank=rank),
                                              "Final and best held-out loss minus the true entropy, vs hidden size d; dashed: the true rank R."))
            sec.tables.append(Table("train", "Trained models", train_frame(r["train"])))
        sections.append(sec)

    if r.get("ngram"):
        sec = Section("ngram", "Data dimension: n-gram W-error",
                      "For a corpus, P holds one row per observed (n-1)-token context: its empirical next-token distribution. "
                      "W-error(k) = sqrt(sum_{i>k} s_i^2) / |P|_F is the smallest relative error of any rank-k approximation "
                      "(Eckart-Young-Mirsky). Dashed lines: the hidden sizes d of the models in this report.")
        p = ngram_figure(r["ngram"], diags, folder / "ngram_w_error.png")
        if p:
            sec.figures.append(Figure("fig-ngram", "n-gram W-error", p, "W-error of each corpus's n-gram matrix vs dimension k."))
        sec.tables.append(Table("ngram", "Data dimension per corpus", ngram_frame(r["ngram"])))
        sections.append(sec)

    if r.get("anisotropy"):
        sec = Section("anisotropy", "Anisotropy by layer",
                      "Anisotropy = mean cosine similarity between the hidden states of distinct tokens, per layer "
                      "(0 = isotropic, 1 = all in one direction); depth 0 is the embedding output, 1 the last layer (study Fig. 2).")
        p = plot_anisotropy_by_depth(r["anisotropy"], folder / "anisotropy.png")
        sec.figures.append(Figure("fig-anisotropy", "Anisotropy by depth", p, "Anisotropy vs normalised layer depth, one line per model."))
        sec.tables.append(Table("anisotropy", "Anisotropy per layer", anisotropy_frame(r["anisotropy"])))
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
        sec.tables.append(Table("head", "LM-head spectrum summary", head_frame(r["head"])))
        sections.append(sec)

    if r.get("sweep") or r.get("saturation") or r.get("scaling_fit"):
        sec = Section("sweep", "Checkpoint sweep: saturation, scaling fit",
                      "Loss, head singular entropy and last-layer anisotropy of every checkpoint on one fixed token sample. Saturation = the loss "
                      "rises after its minimum (relative rise = final / best - 1). Scaling fit: L(N, T) = E + A / N^alpha + B / T^beta "
                      "(study Fig. 1, 3, 4, 5).")
        if r.get("sweep"):
            from lmsat.experiments.saturation import checkpoint_table
            from lmsat.figures.sweep import draw_sweep_figures

            fit = r["scaling_fit"][0].results if r.get("scaling_fit") else None
            drawn = draw_sweep_figures(checkpoint_table(r["sweep"]), r["sweep"], fit, folder)
            captions = {"fig1a": "Loss vs training step (study Fig. 1a); stars: best checkpoints.",
                        "fig1b": "Loss vs compute 6NT with the fitted scaling law (study Fig. 1b).",
                        "fig3": "Loss over training coloured by last-layer anisotropy (study Fig. 3).",
                        "fig4": "Normalised head spectrum s_i / s_1 over training (study Fig. 4).",
                        "fig5": "Singular entropy of the head over training (study Fig. 5)."}
            for fid, path in drawn.items():
                if fid == "fig1b" and fit is None:
                    continue
                sec.figures.append(Figure(f"fig-{fid}", captions[fid].split(" (")[0], path, captions[fid]))
            sec.tables.append(Table("sweep", "Checkpoints", sweep_frame(r["sweep"])))
        if r.get("saturation"):
            sec.tables.append(Table("saturation", "Saturation per model", generic_table(r["saturation"], ("model",))))
        if r.get("scaling_fit"):
            sec.tables.append(Table("scaling_fit", "Scaling-law fit", generic_table(r["scaling_fit"], ())))
        sections.append(sec)

    if r.get("rank_probe") or r.get("rank_probe_ref"):
        sec = Section("rank-probe", "Rank-constrained heads (rank probe)",
                      "The model is frozen and its head replaced by W = AB of rank r, trained on next-token prediction; the table gives the "
                      "validation loss per rank, the dotted line the full-rank head (study Fig. 6).")
        p = rank_probe_figure(r.get("rank_probe", []), r.get("rank_probe_ref", []), diags, folder / "rank_probe.png")
        if p:
            sec.figures.append(Figure("fig-rank-probe", "Rank probe", p, "Validation loss vs rank r; dashed: hidden sizes d."))
        if r.get("rank_probe"):
            sec.tables.append(Table("rank_probe", "Rank-probe results", rank_probe_frame(r["rank_probe"])))
        if r.get("rank_probe_ref"):
            sec.tables.append(Table("rank_probe_ref", "References: full-rank trained head and the model's own head", rank_probe_frame(r["rank_probe_ref"])))
        sections.append(sec)

    if r.get("downstream"):
        sections.append(Section("downstream", "Downstream evaluation", "Zero-shot lm-evaluation-harness tasks per checkpoint (study Table 1).",
                                tables=[Table("downstream", "Downstream tasks", generic_table(r["downstream"], ("model", "revision")))]))

    others = sorted(k for k in r if k not in KNOWN_KINDS and k not in INTERMEDIATE_KINDS and r[k])
    for kind in others:
        sections.append(Section(f"kind-{kind}", f"Other results: {kind}", f"Records of kind '{kind}', as stored.",
                                tables=[Table(kind, kind, generic_table(r[kind]))]))
    return sections
