"""Test the study's causal reading across seeds, from stored records only (no model is loaded).

The study reads "the head's rank collapses, then the loss saturates" as a cause; Kulkarni et al.
(arXiv 2602.20433) find low rank co-occurs with late degradation without causing it. This module
puts the evidence side by side, per run (one model trained with one seed) and per group (the same
model and settings over seeds). Inputs: the ``sweep`` records (checkpoint sweeps, e.g. PolyPythias)
and the ``train`` records (models trained by ``lmsat train``) of one or more run directories.

Per run, over its usable checkpoints (``ok``, not duplicates, step >= ``from_step``), with the onset
rule of :mod:`lmsat.measure.onsets` (the one ``lmsat saturation`` uses):

* ``loss_onset``: onset of the late loss rise (from the best checkpoint on, min rise = ``max_rise``
  x best loss); ``saturates`` = final / best - 1 > ``max_rise`` (as ``lmsat saturation``);
* ``entropy_onset``: rise of the head's singular entropy ln d - H(s^2 / sum s^2) by >= ``min_entropy_rise`` nats;
* ``rank_onset``: fall of the head's effective rank exp(H) by >= ``rank_drop`` x its peak value;
* ``anisotropy_onset``: rise of the last-layer anisotropy by >= ``min_anisotropy_rise``;
* ``low_rank``: final effective rank / d < ``low_rank`` (Kulkarni's "low-rank" runs);
* ``low_rank_linear``: the same with Kulkarni et al.'s normalisation, effective rank exp H(s / sum s) (Roy & Vetterli),
  final / d < ``low_rank_linear``; this effective rank is larger than the squared one for the same head, so the
  two thresholds are not interchangeable (docs/causality.md, docs/methods.md §3);
* within-run association: Pearson r of (effective rank, loss) over checkpoints, and of their first
  differences (``detrended``), each with its Fisher-z interval.

Lead/lag: lag = loss_onset - collapse onset, in steps (> 0: the collapse precedes the rise), over the
runs that have both; its mean with a percentile bootstrap interval over seeds, the fraction of
seeds in which the collapse precedes, and how many of those collapses come before the loss minimum
(an early-training transient rather than a collapse at the saturation point). Co-occurrence (2602.20433's table): runs counted by
low rank (or collapse during training) x saturation. Everything is stored as one ``causality``
record (key ``analysis``) that ``lmsat report`` renders; docs/causality.md explains how to read it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmsat import __version__
from lmsat.errors import UserError
from lmsat.kinds.causality import CausalityRecord
from lmsat.kinds.seeds import spread
from lmsat.kinds.seeds import split_seed as split_name_seed
from lmsat.measure.saturation import best_final_rise
from lmsat.measure.onsets import bootstrap_mean_ci, detrended_correlation, fall_onset, loss_rise_onset, pearson_ci, rise_onset
from lmsat.store import Record, Store, atomic_write_csv

KIND = CausalityRecord.KIND
KEY = "analysis"
#: Settings of a `train` record that name a seed (grouped over, never part of a group's label).
SEED_SETTINGS = ("seed", "data_seed", "weight_seed")
#: The collapse measures whose lead/lag against the loss rise is reported, in this order.
SIGNS = {"rank": "rank_onset", "entropy": "entropy_onset", "anisotropy": "anisotropy_onset"}


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the analysis (all stated in the output, all adjustable from the CLI)."""

    max_rise: float = 0.01
    min_entropy_rise: float = 1.0
    rank_drop: float = 0.25
    min_anisotropy_rise: float = 0.3
    low_rank: float = 0.5
    low_rank_linear: float = 0.5
    from_step: int = 0
    level: float = 0.95
    n_boot: int = 10_000

    def validate(self) -> None:
        if not (self.max_rise >= 0 and self.min_entropy_rise >= 0 and self.min_anisotropy_rise >= 0):
            raise UserError("--max-rise, --min-entropy-rise and --min-anisotropy-rise must be >= 0.")
        if not 0 < self.rank_drop < 1:
            raise UserError(f"--rank-drop must be a fraction in (0, 1) (got {self.rank_drop}).")
        if not 0 < self.low_rank <= 1:
            raise UserError(f"--low-rank must be a fraction of d in (0, 1] (got {self.low_rank}).")
        if not 0 < self.low_rank_linear <= 1:
            raise UserError(f"--low-rank-linear must be a fraction of d in (0, 1] (got {self.low_rank_linear}).")
        if not 0 < self.level < 1:
            raise UserError(f"--level must be in (0, 1), e.g. 0.95 (got {self.level}).")
        if self.n_boot < 100:
            raise UserError(f"--n-boot must be >= 100 (got {self.n_boot}).")


@dataclass
class Run:
    """The curves of one model trained with one seed, read from stored records."""

    run_dir: str
    model: str
    group: str
    seed: int | str | None  # an int, or "weight W, data D" when lmsat train's seeds were split
    hidden_size: int | None
    source: str  # "sweep" or "train"
    steps: np.ndarray
    loss: np.ndarray
    singular_entropy: np.ndarray
    effective_rank: np.ndarray
    anisotropy: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    #: exp H(s / sum s) per checkpoint (Kulkarni et al.'s effective rank); None when the records lack it
    effective_rank_linear: np.ndarray | None = None


# --- reading runs from records ----------------------------------------------------------------


def split_seed(name: str) -> tuple[str, int | None]:
    """``pythia-70m-seed3`` -> (``pythia-70m``, 3); a name without a seed suffix -> (name, None)
    (the one suffix rule, :data:`lmsat.loading.checkpoints.SEED_SUFFIX`; the last seed of several)."""
    base, seeds = split_name_seed(name)
    return base, (int(seeds.split("/")[-1]) if seeds else None)


def train_runs(run_dir: Path, records: Sequence[Record]) -> list[Run]:
    """One :class:`Run` per ``train`` record (curves from its per-checkpoint arrays)."""
    from lmsat.measure.spectrum import effective_rank, singular_entropy

    out = []
    for rec in records:
        arrays = rec.load_arrays()
        if "checkpoint_steps" not in arrays:
            continue
        sv = np.asarray(arrays["head_singular_values"], dtype=np.float64)
        seed: int | str | None = rec.inputs.get("seed")
        ws, ds = rec.inputs.get("weight_seed"), rec.inputs.get("data_seed")
        if ws is not None or ds is not None:
            seed = f"weight {seed if ws is None else ws}, data {seed if ds is None else ds}"
        settings = {k: v for k, v in rec.inputs.items() if k not in ("model", "device", "data", "tokenizer", "lmsat_version")}
        settings["data"] = _corpus_name(rec.inputs.get("data", {}))
        name = str(rec.inputs.get("model", rec.key))
        out.append(Run(
            run_dir=str(run_dir), model=name, group=split_name_seed(name)[0],
            seed=seed, hidden_size=rec.results.get("hidden_size"), source="train",
            steps=np.asarray(arrays["checkpoint_steps"], dtype=np.int64), loss=np.asarray(arrays["eval_loss"], dtype=np.float64),
            singular_entropy=np.array([singular_entropy(s) for s in sv]), effective_rank=np.array([effective_rank(s) for s in sv]),
            anisotropy=np.asarray(arrays["last_layer_anisotropy"], dtype=np.float64), settings=settings,
            effective_rank_linear=np.array([effective_rank(s, "linear") for s in sv]),
        ))
    return out


def _corpus_name(data: Any) -> str:
    corpus = data.get("corpus") if isinstance(data, dict) else None
    source = corpus.get("source") if isinstance(corpus, dict) else corpus
    return Path(str(source)).parent.name + "/" + Path(str(source)).name if source else "?"


def sweep_runs(run_dir: Path, records: Sequence[Record]) -> list[Run]:
    """One :class:`Run` per swept model (its usable checkpoints in step order)."""
    from lmsat.experiments.saturation import checkpoint_table, usable
    from lmsat.loading.checkpoints import short_name

    frame = checkpoint_table(records)
    if frame.empty:
        return []
    seeds = {str(r.inputs.get("model")): r.inputs.get("model_seed") for r in records}
    out = []
    for model, group in frame.groupby("model", sort=False):
        good = usable(group).sort_values("step")
        name = short_name(str(model))
        base, seed = split_seed(name)
        stored = seeds.get(str(model))
        out.append(Run(
            run_dir=str(run_dir), model=name, group=base, seed=int(stored) if stored is not None else seed,
            hidden_size=_int_or_none(group["hidden_size"].dropna().iloc[0]) if group["hidden_size"].notna().any() else None,
            source="sweep", steps=good["step"].to_numpy(np.int64), loss=good["cross_entropy"].to_numpy(np.float64),
            singular_entropy=good["singular_entropy"].to_numpy(np.float64), effective_rank=good["effective_rank"].to_numpy(np.float64),
            anisotropy=good["last_layer_anisotropy"].to_numpy(np.float64),
            effective_rank_linear=_linear_rank(good),
        ))
    return out


def _linear_rank(checkpoints: pd.DataFrame) -> np.ndarray | None:
    """exp H(s / sum s) from the sweep's stored ``singular_entropy_linear`` = ln k - H (k = min(V, d) = d for an LM
    head, V > d): k exp(-singular_entropy_linear). None when the records do not store it."""
    if "singular_entropy_linear" not in checkpoints or not checkpoints["singular_entropy_linear"].notna().any():
        return None
    k = pd.to_numeric(checkpoints["hidden_size"], errors="coerce").to_numpy(np.float64)
    return k * np.exp(-pd.to_numeric(checkpoints["singular_entropy_linear"], errors="coerce").to_numpy(np.float64))


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def read_runs(run_dirs: Sequence[str | Path]) -> list[Run]:
    """Every run of the run directories: ``train`` records, plus swept models not also trained there.

    Train runs are grouped by model name plus the settings that differ between the train runs given
    (seeds excepted), so a grid of output folders (batch size x weight decay, ...) becomes one group
    per setting with its seeds inside.
    """
    from lmsat.experiments.sweep import sweep_records

    if not run_dirs:
        raise UserError("give at least one run directory written by lmsat sweep or lmsat train.")
    runs: list[Run] = []
    for rd in map(Path, run_dirs):
        if not rd.is_dir():
            raise UserError(f"run directory '{rd}' does not exist; give folders written by lmsat sweep -o or lmsat train -o.")
        store = Store(rd, readonly=True)
        trained = train_runs(rd, store.records("train"))
        names = {r.model for r in trained}
        runs += trained + [r for r in sweep_runs(rd, sweep_records(rd) if (rd / "sweep").is_dir() else []) if r.model not in names]
    if not runs:
        raise UserError(
            f"no sweep or train records in {', '.join(str(d) for d in run_dirs)}; run lmsat sweep or lmsat train with -o into them first."
        )
    _label_train_groups([r for r in runs if r.source == "train"])
    return runs


#: Settings named first in a group label (the grid's axes); any other differing setting follows.
_LABEL_ORDER = ("data", "head", "batch_size", "weight_decay", "lr", "layers", "arch", "seq_len", "steps")


def _label_train_groups(runs: list[Run]) -> None:
    """Group label = model name without its seeds + the settings that split the runs (seeds excepted).

    A setting missing from an older record counts as its default (``TrainConfig``), and a setting
    that only follows from others already named (e.g. the steps of a fixed token budget, which
    follow from the batch size) or from the model name (``-mos4``, ``-specreg1``) is left out of the label.
    """
    from lmsat.training.config import TrainConfig

    defaults = TrainConfig().settings()
    for r in runs:
        for k, v in defaults.items():
            r.settings.setdefault(k, v)
    keys = sorted({k for r in runs for k in r.settings} - set(SEED_SETTINGS) - {"hidden_size", "tokens_per_step"},
                  key=lambda k: (_LABEL_ORDER.index(k) if k in _LABEL_ORDER else len(_LABEL_ORDER), k))
    chosen: list[str] = []

    def parts(r: Run, ks: list[str]) -> tuple[str, ...]:  # the name already tells apart what it encodes (head, mos4, specreg1)
        return (split_name_seed(r.model)[0], *(repr(r.settings.get(k)) for k in ks))

    for k in keys:
        if len({parts(r, chosen + [k]) for r in runs}) > len({parts(r, chosen) for r in runs}):
            chosen.append(k)
    for r in runs:
        label = [f"{_short(k)}={r.settings.get(k)}" for k in chosen]
        r.group = split_name_seed(r.model)[0] + (" " + " ".join(label) if label else "")


_SHORT = {"batch_size": "batch", "weight_decay": "wd", "learning_rate": "lr", "data": "data"}


def _short(key: str) -> str:
    return _SHORT.get(key, key)


# --- per run ----------------------------------------------------------------------------------


def run_row(run: Run, t: Thresholds) -> dict[str, Any]:
    """The per-run numbers of the module docstring (NaN / None where a curve is missing)."""
    keep = (run.steps >= t.from_step) & np.isfinite(run.loss)
    s, loss = run.steps[keep], run.loss[keep]
    row: dict[str, Any] = {"group": run.group, "seed": run.seed, "model": run.model, "run_dir": run.run_dir, "source": run.source,
                           "hidden_size": run.hidden_size, "n_checkpoints": int(keep.sum())}
    if len(s) < 2:
        return row
    row.update(best_final_rise(s, loss))
    row["saturates"] = bool(row["relative_rise"] > t.max_rise)
    onset = loss_rise_onset(s, loss, t.max_rise)
    row["loss_onset"] = onset.step if row["saturates"] else None
    ent = rise_onset(run.steps, run.singular_entropy, t.min_entropy_rise, t.from_step)
    row["entropy_onset"], row["entropy_rise"] = ent.step, ent.rise
    rank_ok = (run.steps >= t.from_step) & np.isfinite(run.effective_rank)
    peak = float(np.max(run.effective_rank[rank_ok])) if rank_ok.any() else math.nan
    rk = fall_onset(run.steps, run.effective_rank, t.rank_drop * peak if math.isfinite(peak) else math.inf, t.from_step)
    row["rank_onset"], row["rank_fall"] = rk.step, rk.rise
    an = rise_onset(run.steps, run.anisotropy, t.min_anisotropy_rise, t.from_step)
    row["anisotropy_onset"], row["anisotropy_rise"] = an.step, an.rise
    final_rank = run.effective_rank[rank_ok][-1] if rank_ok.any() else math.nan
    row["final_effective_rank"] = float(final_rank)
    d = run.hidden_size
    row["final_rank_fraction"] = float(final_rank / d) if d else math.nan
    row["low_rank"] = bool(row["final_rank_fraction"] < t.low_rank) if math.isfinite(row["final_rank_fraction"]) else None
    lin = run.effective_rank_linear
    lin_ok = rank_ok & np.isfinite(lin) if lin is not None else None
    final_lin = float(lin[lin_ok][-1]) if lin is not None and lin_ok.any() else math.nan
    row["final_effective_rank_linear"] = final_lin
    row["final_rank_fraction_linear"] = float(final_lin / d) if d and math.isfinite(final_lin) else math.nan
    row["low_rank_linear"] = bool(row["final_rank_fraction_linear"] < t.low_rank_linear) if _finite(row["final_rank_fraction_linear"]) else None
    row["collapses"] = rk.step is not None
    for name, ci in (("r", pearson_ci(run.effective_rank[keep], loss, t.level)),
                     ("r_detrended", detrended_correlation(run.effective_rank[keep], loss, t.level))):
        row[name], row[f"{name}_low"], row[f"{name}_high"] = ci.estimate, ci.low, ci.high
    return row


# --- across seeds -----------------------------------------------------------------------------


def lead_lag(rows: Sequence[dict[str, Any]], sign: str, t: Thresholds) -> dict[str, Any]:
    """Lag = loss_onset - <sign>_onset (steps; > 0: the sign precedes the rise) over the rows that have
    both: mean with its bootstrap interval, the fraction of those runs where the sign precedes
    (lag > 0), ties (lag = 0), and how many runs lacked one onset or the other."""
    col = SIGNS[sign]
    both = [r for r in rows if r.get("loss_onset") is not None and r.get(col) is not None]
    lags = [float(r["loss_onset"] - r[col]) for r in both]
    ci = bootstrap_mean_ci(lags, t.level, t.n_boot, seed=0)
    return {
        "sign": sign, "n_runs": len(rows), "n_both": len(both),
        "n_rise_only": sum(r.get("loss_onset") is not None and r.get(col) is None for r in rows),
        "n_sign_only": sum(r.get("loss_onset") is None and r.get(col) is not None for r in rows),
        "lag_mean": ci.estimate, "lag_low": ci.low, "lag_high": ci.high,
        "precedes": float(np.mean([x > 0 for x in lags])) if lags else math.nan,
        "ties": int(sum(x == 0 for x in lags)), "seeds": [r.get("seed") for r in both],
        # a collapse while the loss still falls (before its best checkpoint) is an early-training transient
        "before_best": int(sum(r.get("best_step") is not None and r[col] < r["best_step"] for r in both)),
    }


#: Per-run numbers a group shows as mean and sd over its seeds.
GROUP_VALUES = ("relative_rise", "best_step", "final_effective_rank", "final_rank_fraction", "final_rank_fraction_linear", "r_detrended")


def group_rows(rows: Sequence[dict[str, Any]], t: Thresholds) -> list[dict[str, Any]]:
    """One row per group (model and settings over seeds): mean and spread (sd) of each number,
    the lead/lag of the rank collapse, and the mean relative rise and mean detrended correlation with their bootstrap intervals."""
    out = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    for g, members in groups.items():
        row: dict[str, Any] = {"group": g, "n_seeds": len(members), "seeds": ",".join(str(m["seed"]) for m in members),
                               "hidden_size": members[0].get("hidden_size")}
        for col in GROUP_VALUES:  # mean and sd over seeds: the one grouping function (lmsat.kinds.seeds.spread)
            st = spread([m.get(col) for m in members])
            row[f"{col}_mean"], row[f"{col}_sd"] = st["mean"], st["sd"]
        row["saturating"] = f"{sum(bool(m.get('saturates')) for m in members)}/{len(members)}"
        row["collapsing"] = f"{sum(bool(m.get('collapses')) for m in members)}/{len(members)}"
        ll = lead_lag(members, "rank", t)
        row.update(lag_mean=ll["lag_mean"], lag_low=ll["lag_low"], lag_high=ll["lag_high"], precedes=ll["precedes"], n_both=ll["n_both"])
        det = bootstrap_mean_ci([m["r_detrended"] for m in members if _finite(m.get("r_detrended"))], t.level, t.n_boot)
        row.update(r_detrended_low=det.low, r_detrended_high=det.high)
        rise = bootstrap_mean_ci([m["relative_rise"] for m in members if _finite(m.get("relative_rise"))], t.level, t.n_boot)
        row.update(relative_rise_low=rise.low, relative_rise_high=rise.high)
        out.append(row)
    return out


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def cooccurrence(rows: Sequence[dict[str, Any]], by: str = "low_rank") -> dict[str, int]:
    """Counts of runs by ``by`` (``low_rank`` at the end, or ``collapses`` during training) x ``saturates``,
    as in arXiv 2602.20433; runs where either is unknown are counted apart."""
    counts = {"low_and_saturates": 0, "low_no_saturation": 0, "high_and_saturates": 0, "high_no_saturation": 0, "unknown": 0}
    for r in rows:
        low, sat = r.get(by), r.get("saturates")
        if low is None or sat is None:
            counts["unknown"] += 1
            continue
        counts[f"{'low' if low else 'high'}_{'and_saturates' if sat else 'no_saturation'}"] += 1
    return counts


# --- the analysis -----------------------------------------------------------------------------


def analyse(runs: Sequence[Run], t: Thresholds) -> dict[str, Any]:
    """Everything ``lmsat causality`` prints and stores: runs, groups, lead/lag, co-occurrence, verdict."""
    rows = [run_row(r, t) for r in runs]
    rows.sort(key=lambda r: (r["group"], _seed_order(r["seed"]), r["run_dir"]))
    lead = [lead_lag(rows, s, t) for s in SIGNS]
    co = {"low_rank": cooccurrence(rows, "low_rank"), "collapses": cooccurrence(rows, "collapses")}
    if any(r.get("low_rank_linear") is not None for r in rows):  # Kulkarni et al.'s normalisation, where the records store it
        co["low_rank_linear"] = cooccurrence(rows, "low_rank_linear")
    det = bootstrap_mean_ci([r["r_detrended"] for r in rows if _finite(r.get("r_detrended"))], t.level, t.n_boot)
    lev = bootstrap_mean_ci([r["r"] for r in rows if _finite(r.get("r"))], t.level, t.n_boot)
    summary = {"level": t.level, "n_runs": len(rows), "n_groups": len({r["group"] for r in rows}),
               "n_saturating": sum(bool(r.get("saturates")) for r in rows),
               "n_collapsing": sum(bool(r.get("collapses")) for r in rows),
               "r_mean": lev.estimate, "r_low": lev.low, "r_high": lev.high,
               "r_detrended_mean": det.estimate, "r_detrended_low": det.low, "r_detrended_high": det.high}
    return {"thresholds": asdict(t), "runs": rows, "groups": group_rows(rows, t), "lead_lag": lead, "cooccurrence": co,
            "summary": summary, "verdict": verdict(summary, lead[0], co)}


def _seed_order(seed: int | str | None) -> tuple[int, int, str]:
    if seed is None:
        return (0, 0, "")
    return (1, seed, "") if isinstance(seed, int) else (2, 0, str(seed))


def verdict(summary: dict[str, Any], rank_lag: dict[str, Any], co: dict[str, dict[str, int]]) -> list[str]:
    """Plain-words statements of what the numbers support and what they do not (docs/causality.md)."""
    out = []
    n, sat = summary["n_runs"], summary["n_saturating"]
    if sat == 0:
        out.append(f"None of the {n} runs shows a late loss rise above the threshold: these runs cannot test whether a head collapse causes saturation.")
    else:
        out.append(f"{sat} of {n} runs show a late loss rise; {summary['n_collapsing']} show an effective-rank collapse.")
    if rank_lag["n_both"]:
        lo, hi = rank_lag["lag_low"], rank_lag["lag_high"]
        where = ("precedes" if lo > 0 else "follows" if hi < 0 else "neither clearly precedes nor follows")
        out.append(
            f"Where both happen ({rank_lag['n_both']} runs), the rank collapse {where} the loss rise: mean lead "
            f"{rank_lag['lag_mean']:.0f} steps, {100 * summary['level']:.0f}% interval [{lo:.0f}, {hi:.0f}], "
            f"preceding in {100 * rank_lag['precedes']:.0f}% of them. Preceding is necessary for a cause, not proof of one."
        )
        if rank_lag["before_best"]:
            out.append(
                f"In {rank_lag['before_best']} of those {rank_lag['n_both']} runs the collapse happens while the loss is still falling "
                "(before its best checkpoint): an early-training dip of the rank, not a collapse at the saturation point; "
                "re-run with --from-step past it to look for a late collapse."
            )
    c = co["low_rank"]
    if c["low_no_saturation"] and c["low_and_saturates"] + c["high_and_saturates"]:
        out.append(f"{c['low_no_saturation']} run(s) end with a low-rank head and no saturation: low rank is not sufficient for saturation here.")
    if c["high_and_saturates"]:
        out.append(f"{c['high_and_saturates']} run(s) saturate with a head that is not low-rank: low rank is not necessary for saturation here.")
    r, lo, hi = summary["r_detrended_mean"], summary["r_detrended_low"], summary["r_detrended_high"]
    if _finite(r):
        lev = summary["r_mean"]
        out.append(
            f"Within runs, effective rank and loss correlate at r = {lev:+.2f} over checkpoints, but their step-to-step changes at "
            f"r = {r:+.2f} (interval over runs [{lo:+.2f}, {hi:+.2f}])"
            + (": the level correlation is mostly two curves trending together." if abs(r) < 0.5 * abs(lev) else ".")
        )
    out.append("Co-occurrence and order across seeds are evidence about association and timing; only an intervention on the head "
               "(MoS, spectral regulariser, frozen random head) that changes the rank without changing d can show a cause.")
    return out


def run_causality(run_dirs: Sequence[str | Path], output: str | Path | None = None, thresholds: Thresholds = Thresholds()) -> Record:
    """Read the runs, analyse, store one ``causality`` record in ``output`` (default: the first run
    directory) and write ``causality_runs.csv`` and ``causality_groups.csv`` beside it (the figure:
    :func:`lmsat.figures.outputs.refresh_causality`, which the CLI calls)."""
    thresholds.validate()
    runs = read_runs(run_dirs)
    out = Path(output) if output is not None else Path(run_dirs[0])
    result = analyse(runs, thresholds)
    inputs = {"run_dirs": [str(Path(d).resolve()) for d in run_dirs], "thresholds": asdict(thresholds),
              "runs": [f"{r.run_dir}|{r.model}" for r in runs], "lmsat_version": __version__}
    record = CausalityRecord(key=KEY, inputs=inputs, **_jsonable(result)).put(Store(out))
    atomic_write_csv(out / "causality_runs.csv", pd.DataFrame(result["runs"]))
    atomic_write_csv(out / "causality_groups.csv", pd.DataFrame(result["groups"]))
    return record


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
