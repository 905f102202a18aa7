"""Seeds as a group: the one function that turns runs that differ only in their seed into a mean and a spread.

A *run* is one model trained (or released) with one seed; a *group* is everything but the seed:
the model name without its seed suffix (``pythia-70m-seed3`` -> ``pythia-70m``, lmsat train's
``gpt-neox-d32-l2-seed1`` / ``-weight-seed1`` / ``-data-seed1`` -> ``gpt-neox-d32-l2``) plus any
other key columns given. Tables and figures show a group as

    mean  = (1/n) sum_i x_i                            over the n seeds with a finite value
    sd    = sqrt( sum_i (x_i - mean)^2 / (n - 1) )     (sample standard deviation; NaN when n < 2)
    min, max                                           (the band figures draw)

never as one line per run (docs/causality.md §"What is measured"). Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lmsat.loading.checkpoints import SEED_SUFFIX  # the one seed-suffix rule

#: Inputs of a record that name a seed (grouped over, never part of a group's key).
SEED_INPUTS = ("seed", "data_seed", "weight_seed", "model_seed")
STATS = ("n", "mean", "sd", "min", "max")


def split_seed(name: str) -> tuple[str, str | None]:
    """(name without its seed suffixes, the suffixes' seeds joined by ``/``, or None when it has none).

    ``pythia-70m-seed3`` -> (``pythia-70m``, ``3``); ``m-d8-weight-seed2-data-seed1`` -> (``m-d8``, ``2/1``).
    A name without a suffix is seed 0 for lmsat train (the unsuffixed run) or the original run for PolyPythias.
    """
    seeds = SEED_SUFFIX.findall(name)
    return SEED_SUFFIX.sub("", name), ("/".join(seeds) if seeds else None)


def spread(values: Sequence[Any]) -> dict[str, float]:
    """n, mean, sd (n - 1 in the denominator), min and max of the finite values (module docstring); NaN when none."""
    x = np.array([float(v) for v in values if _finite(v)], dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan}
    return {"n": int(x.size), "mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else math.nan,
            "min": float(x.min()), "max": float(x.max())}


def _finite(v: Any) -> bool:
    if v is None or isinstance(v, (bool, np.bool_, str)):
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def group_over_seeds(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], values: Sequence[str], seed: str = "seed") -> pd.DataFrame:
    """One row per group of ``rows`` (dicts) sharing ``keys``, in first-seen order:
    the keys, ``n_seeds``, ``seeds`` (comma-joined ``rows[seed]``) and, for each column v in ``values``,
    ``v_n`` (seeds with a finite v), ``v_mean``, ``v_sd``, ``v_min``, ``v_max`` over the group's rows (:func:`spread`)."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(_hashable(r.get(k)) for k in keys), []).append(r)
    out = []
    for members in groups.values():
        row: dict[str, Any] = {k: members[0].get(k) for k in keys}
        row["n_seeds"] = len(members)
        row["seeds"] = ",".join("0" if m.get(seed) is None else str(m.get(seed)) for m in members)
        for v in values:
            s = spread([m.get(v) for m in members])
            row.update({f"{v}_{stat}": s[stat] for stat in STATS})
        out.append(row)
    columns = [*keys, "n_seeds", "seeds", *(f"{v}_{stat}" for v in values for stat in STATS)]
    return pd.DataFrame(out, columns=columns)


def _hashable(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    return v


def has_seed_groups(names: Sequence[str]) -> bool:
    """True when at least two of ``names`` differ only in their seed suffix."""
    bases = [split_seed(n)[0] for n in names]
    return len(set(bases)) < len(bases)


def curve_band(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> dict[str, np.ndarray]:
    """Mean, sd, min and max over seeds of curves given as (steps, values), at every step any curve has:
    each statistic over the curves that have a finite value at that step (``n`` says how many)."""
    steps = np.unique(np.concatenate([np.asarray(s, dtype=np.float64) for s, _ in curves])) if curves else np.array([])
    stats = {k: np.full(steps.size, np.nan) for k in ("mean", "sd", "min", "max", "n")}
    lookup = [dict(zip(np.asarray(s, dtype=np.float64).tolist(), np.asarray(v, dtype=np.float64).tolist())) for s, v in curves]
    for i, t in enumerate(steps.tolist()):
        s = spread([c.get(t) for c in lookup])
        for k in stats:
            stats[k][i] = s[k]
    return {"step": steps, **stats}


def mean_sd_text(mean: float, sd: float, digits: int = 3) -> str:
    """``mean ± sd`` for a table cell (``mean`` alone when sd is NaN: one seed); empty when mean is NaN."""
    if not _finite(mean):
        return ""
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if _finite(sd) else "")


def _yes_no(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(bool(v))


def _plain(v: float) -> str:
    return f"{int(v)}" if float(v).is_integer() else f"{v:.6g}"


def grouped_table(frame: pd.DataFrame, name: str, keys: Sequence[str], values: Sequence[str], labels: Mapping[str, str],
                  digits: int = 3, counts: Sequence[str] = ()) -> pd.DataFrame:
    """A per-run table (``frame``, one row per run, the run's model name in column ``name``) as one row per
    seed group: ``name`` without its seed suffix, the other ``keys``, the seeds, and each of ``values`` as
    ``mean ± sd`` (:func:`mean_sd_text`; the value itself when every seed has the same), headed
    ``<label> (mean ± sd)``; each yes/no column of ``counts`` as ``k/n`` (k of the n seeds that say yes).
    Key columns starting with ``_`` split groups without being shown."""
    rows = []
    for rec in frame.to_dict("records"):
        base, s = split_seed(str(rec.get(name)))
        rows.append({**rec, name: base, "_seed": s, **{f"_{c}": _yes_no(rec.get(c)) for c in counts}})
    values = [v for v in values if v in frame.columns]
    counts = [c for c in counts if c in frame.columns]
    g = group_over_seeds(rows, [name, *[k for k in keys if k in frame.columns]], [*values, *(f"_{c}" for c in counts)], seed="_seed")
    shown = [k for k in keys if k in frame.columns and not k.startswith("_")]  # "_" keys group but are not shown
    out = g[[name, *shown, "n_seeds", "seeds"]].copy()
    for v in values:  # a value every seed shares (parameters, steps) is shown as it is
        out[v] = [_plain(lo) if lo == hi else mean_sd_text(m, s, digits)
                  for m, s, lo, hi in zip(g[f"{v}_mean"], g[f"{v}_sd"], g[f"{v}_min"], g[f"{v}_max"])]
    for c in counts:
        out[c] = [f"{round(m * n)}/{n}" if n else "" for m, n in zip(g[f"_{c}_mean"], g[f"_{c}_n"])]
    names = {name: labels.get(name, name), "n_seeds": "runs (seeds)", "seeds": "seeds", **{c: labels.get(c, c) for c in counts},
             **{k: labels.get(k, k) for k in keys}, **{v: f"{labels.get(v, v)} (mean ± sd)" for v in values}}
    return out.rename(columns=names)
