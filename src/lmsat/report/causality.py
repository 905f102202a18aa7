"""The report's "causality" section and the tables ``lmsat causality`` prints, from the stored record only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from lmsat.kinds.base import as_kind
from lmsat.kinds.causality import CausalityRecord
from lmsat.store import Record

INTRO = (
    "Does the LM head's rank collapse precede and go with the late loss rise, across seeds? Onsets use one rule for every curve "
    "(the first checkpoint after the last upward crossing of the half-rise level before the peak; docs/causality.md), the loss rise "
    "is looked for after the best checkpoint, a collapse is a fall of the effective rank exp H(s^2/sum s^2) by a stated fraction of "
    "its peak. Lead = loss-rise onset - collapse onset (steps; > 0: the collapse comes first), with a percentile bootstrap "
    "interval over seeds. Co-occurrence counts runs as in arXiv 2602.20433. The detrended correlation uses step-to-step "
    "differences, so two curves that merely both trend over training do not count as associated."
)


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _pm(g: dict[str, Any], col: str, scale: float = 1.0, digits: int = 2) -> str:
    m, s = _num(g.get(f"{col}_mean")), _num(g.get(f"{col}_sd"))
    if m is None:
        return "-"
    return f"{scale * m:.{digits}f}" + (f" ± {scale * s:.{digits}f}" if s is not None else "")


def _ci(m: Any, lo: Any, hi: Any, fmt: str) -> str:
    m, lo, hi = _num(m), _num(lo), _num(hi)
    if m is None:
        return "-"
    return format(m, fmt) + (f" [{format(lo, fmt)}, {format(hi, fmt)}]" if lo is not None and hi is not None else "")


def group_frame(results: dict[str, Any]) -> pd.DataFrame:
    """One row per group (model and settings over seeds): counts, mean ± sd, lead and detrended r with intervals."""
    rows = []
    for g in results.get("groups", []):
        p = _num(g.get("precedes"))
        rows.append({"group": g["group"], "seeds": g["n_seeds"], "saturate": g["saturating"], "collapse": g["collapsing"],
                     "rise %": _pm(g, "relative_rise", 100.0, 1), "rank/d": _pm(g, "final_rank_fraction"),
                     **({"rank/d, p = s/Σs": _pm(g, "final_rank_fraction_linear")} if _num(g.get("final_rank_fraction_linear_mean")) is not None else {}),
                     "lead (steps)": _ci(g.get("lag_mean"), g.get("lag_low"), g.get("lag_high"), ".0f"),
                     "precedes": "-" if p is None else f"{100 * p:.0f}%",
                     "r diff": _ci(g.get("r_detrended_mean"), g.get("r_detrended_low"), g.get("r_detrended_high"), "+.2f")})
    return pd.DataFrame(rows)


def lead_lag_frame(results: dict[str, Any]) -> pd.DataFrame:
    """Lead of each collapse sign over the loss rise, pooled over all runs."""
    names = {"rank": "effective-rank fall", "entropy": "singular-entropy rise", "anisotropy": "anisotropy jump"}
    rows = []
    for ll in results.get("lead_lag", []):
        p = _num(ll.get("precedes"))
        rows.append({"sign": names.get(ll["sign"], ll["sign"]), "runs": ll["n_runs"], "both": ll["n_both"],
                     "rise only": ll["n_rise_only"], "sign only": ll["n_sign_only"],
                     "lead (steps)": _ci(ll.get("lag_mean"), ll.get("lag_low"), ll.get("lag_high"), ".0f"),
                     "precedes": "-" if p is None else f"{100 * p:.0f}%", "ties": ll["ties"],
                     "before best": ll.get("before_best", "-")})
    return pd.DataFrame(rows)


def cooccurrence_frame(results: dict[str, Any]) -> pd.DataFrame:
    """Runs counted by rank (low at the end, or collapsing during training) x saturation."""
    t = results.get("thresholds", {})
    rows = []
    for by, c in results.get("cooccurrence", {}).items():
        what = (f"final eff. rank < {t.get('low_rank')} d" if by == "low_rank"
                else f"final eff. rank with p = s/Σs (Kulkarni et al.) < {t.get('low_rank_linear')} d" if by == "low_rank_linear"
                else f"eff. rank falls by >= {100 * float(t.get('rank_drop', 0)):.0f}% of its peak")
        rows.append({"rank measure": what, "low & saturates": c["low_and_saturates"], "low & no rise": c["low_no_saturation"],
                     "high & saturates": c["high_and_saturates"], "high & no rise": c["high_no_saturation"], "unknown": c["unknown"]})
    return pd.DataFrame(rows)


RUN_COLUMNS = ["group", "seed", "best_step", "relative_rise", "saturates", "loss_onset", "rank_onset", "entropy_onset",
               "anisotropy_onset", "final_rank_fraction", "low_rank", "final_rank_fraction_linear", "low_rank_linear", "r", "r_detrended",
               "r_detrended_low", "r_detrended_high"]


def runs_frame(results: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(results.get("runs", []))
    return frame[[c for c in RUN_COLUMNS if c in frame]] if len(frame) else frame


def causality_sections(records: list[Record], folder: Path) -> list[Any]:
    """One "causality" section per record: the verdict in plain words, the figure and the four tables."""
    from lmsat.figures.causality import plot_causality
    from lmsat.report.sections import Figure, Section, Table

    sections = []
    for i, rec in enumerate(records):
        res = as_kind(rec, CausalityRecord).results()
        t = res.get("thresholds", {})
        verdict = " ".join(res.get("verdict", []))
        stated = (f"Thresholds: saturates when final/best - 1 > {t.get('max_rise')}; collapse when the effective rank falls by "
                  f">= {t.get('rank_drop')} of its peak (or the singular entropy rises by >= {t.get('min_entropy_rise')} nats); "
                  f"low rank when final effective rank / d < {t.get('low_rank')} (p = s²/Σs², lmsat's and the study's; with "
                  f"Kulkarni et al.'s p = s/Σs, < {t.get('low_rank_linear', '-')}); checkpoints from step {t.get('from_step')}; "
                  f"{100 * float(t.get('level', 0.95)):.0f}% intervals.")
        suffix = "" if len(records) == 1 else f"-{i + 1}"
        sec = Section(f"causality{suffix}", "Causality: head collapse and loss rise across seeds" + (f" ({i + 1})" if suffix else ""),
                      f"{INTRO} What this evidence supports: {verdict} {stated}")
        path = plot_causality(res, folder / f"causality{suffix}.png")
        sec.figures.append(Figure(f"fig-causality{suffix}", "Rank vs rise, and lead/lag over seeds", path,
                                  "Left: final effective rank / d vs relative loss rise, dots = seeds, crosses = group mean ± sd. "
                                  "Right: lead of the rank collapse over the loss rise per group, dots = seeds, bar = bootstrap interval."))
        sec.tables += [Table(f"causality_groups{suffix}", "Groups over seeds (mean ± sd; [interval])", group_frame(res)),
                       Table(f"causality_lead_lag{suffix}", "Lead of each collapse sign over the loss rise", lead_lag_frame(res)),
                       Table(f"causality_cooccurrence{suffix}", "Co-occurrence of low rank and saturation (runs)", cooccurrence_frame(res)),
                       Table(f"causality_runs{suffix}", "Per run (one model, one seed)", runs_frame(res))]
        sections.append(sec)
    return sections
