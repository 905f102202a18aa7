"""Saturation analysis of stored sweep records (SPEC 2.1, 2.4 over training, 2.5): no model is loaded.

Per model, over its ``ok`` checkpoints that are not duplicates of another one
(a revision serving another revision's weights would put a false point on the
curve), in step order:

* best step / best loss: the checkpoint with the lowest cross-entropy (nats/token);
* final step / final loss: the last checkpoint;
* relative rise = final / best - 1 (0 when the last checkpoint is the best);
  the model *saturates* when the rise exceeds ``max_rise`` (default 1%);
* spectrum-collapse step: where the singular entropy jumps (:func:`jump_step`),
  the study's Fig. 4/5 collapse of the head to one dominant direction;
* anisotropy-jump step: the same for the last-layer anisotropy (Fig. 3).

:func:`jump_step` finds a jump as the *last upward crossing of the half-rise
level before the curve's maximum*: with m the highest value (first reached at
step k) and lo the lowest value at or before k, a jump exists when
m - lo >= ``min_rise``; its step is the first checkpoint after the last one
below (lo + m) / 2 that precedes k. A transient rise early in training that
falls back below the half level is therefore not mistaken for the collapse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmsat import __version__
from lmsat.loading.checkpoints import short_name
from lmsat.store import Record, Store, atomic_write_csv

KIND = "saturation"
DEFAULT_MAX_RISE = 0.01
DEFAULT_MIN_ENTROPY_RISE = 1.0
DEFAULT_MIN_ANISOTROPY_RISE = 0.3

CHECKPOINT_COLUMNS = [
    "model", "name", "revision", "step", "status", "error", "cross_entropy", "last_layer_anisotropy",
    "singular_entropy", "singular_entropy_linear", "effective_rank", "hidden_size", "n_params",
    "tokens_per_step", "tokens_seen", "weights_hash", "head_hash", "duplicate_of", "wall_time_s", "key",
]


def checkpoint_table(records: Sequence[Record]) -> pd.DataFrame:
    """One row per sweep record (sorted by model, then step), the columns of :data:`CHECKPOINT_COLUMNS`.

    ``tokens_seen`` = step x tokens_per_step (empty when tokens per step is unknown).
    """
    rows = []
    for rec in records:
        r, i = rec.results, rec.inputs
        tps = i.get("tokens_per_step")
        rows.append(
            {
                "model": i.get("model"),
                "name": short_name(str(i.get("model"))),
                "revision": i.get("revision"),
                "step": int(i.get("step", 0)),
                "status": r.get("status"),
                "error": r.get("error"),
                "cross_entropy": r.get("cross_entropy"),
                "last_layer_anisotropy": r.get("last_layer_anisotropy"),
                "singular_entropy": r.get("singular_entropy"),
                "singular_entropy_linear": r.get("singular_entropy_linear"),
                "effective_rank": r.get("effective_rank"),
                "hidden_size": r.get("hidden_size"),
                "n_params": r.get("n_params"),
                "tokens_per_step": tps,
                "tokens_seen": int(i.get("step", 0)) * int(tps) if tps else None,
                "weights_hash": r.get("weights_hash"),
                "head_hash": r.get("head_hash"),
                "duplicate_of": r.get("duplicate_of"),
                "wall_time_s": r.get("wall_time_s"),
                "key": rec.key,
            }
        )
    frame = pd.DataFrame(rows, columns=CHECKPOINT_COLUMNS)
    if frame.empty:
        return frame
    order = {m: k for k, m in enumerate(dict.fromkeys(_model_order(records)))}
    frame["_order"] = frame["model"].map(order)
    return frame.sort_values(["_order", "step", "revision"]).drop(columns="_order").reset_index(drop=True)


def _model_order(records: Sequence[Record]) -> list[str]:
    """Models by hidden size then parameter count then name (smallest first), as the study lists them."""
    facts: dict[str, tuple[float, float, str]] = {}
    for rec in records:
        m = str(rec.inputs.get("model"))
        d = rec.results.get("hidden_size") or math.inf
        n = rec.results.get("n_params") or math.inf
        old = facts.get(m, (math.inf, math.inf, m))
        facts[m] = (min(old[0], d), min(old[1], n), m)
    return [m for m, _ in sorted(facts.items(), key=lambda kv: kv[1])]


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``ok`` checkpoints that are not duplicates, with a finite loss."""
    ok = frame[(frame["status"] == "ok") & frame["duplicate_of"].isna()]
    return ok[np.isfinite(ok["cross_entropy"].astype(float))]


def saturation_point(steps: Sequence[int], losses: Sequence[float]) -> dict[str, Any]:
    """Best step/loss (lowest loss; the earliest on ties), final step/loss (last step), relative rise final/best - 1."""
    s = np.asarray(steps, dtype=np.int64)
    loss = np.asarray(losses, dtype=np.float64)
    if len(s) == 0:
        raise ValueError("no checkpoints")
    order = np.argsort(s, kind="stable")
    s, loss = s[order], loss[order]
    b = int(np.argmin(loss))
    return {
        "best_step": int(s[b]),
        "best_loss": float(loss[b]),
        "final_step": int(s[-1]),
        "final_loss": float(loss[-1]),
        "relative_rise": float(loss[-1] / loss[b] - 1.0),
    }


def jump_step(steps: Sequence[int], values: Sequence[float], min_rise: float, from_step: int = 0) -> tuple[int | None, float]:
    """(step of the jump or None, size of the rise m - lo); see the module docstring.

    Only checkpoints with step >= ``from_step`` and a finite value count.
    """
    s = np.asarray(steps, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    keep = (s >= from_step) & np.isfinite(v)
    s, v = s[keep], v[keep]
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    if len(v) < 2:
        return None, 0.0
    k = int(np.argmax(v))
    lo = float(v[: k + 1].min())
    rise = float(v[k] - lo)
    if k == 0 or rise < min_rise:
        return None, rise
    half = lo + rise / 2.0
    below = np.nonzero(v[:k] < half)[0]
    return int(s[below[-1] + 1]), rise


def saturation_table(
    frame: pd.DataFrame,
    max_rise: float = DEFAULT_MAX_RISE,
    min_entropy_rise: float = DEFAULT_MIN_ENTROPY_RISE,
    min_anisotropy_rise: float = DEFAULT_MIN_ANISOTROPY_RISE,
    from_step: int = 0,
) -> pd.DataFrame:
    """One row per model from a :func:`checkpoint_table` (module docstring); models without a usable checkpoint get NaNs."""
    rows = []
    for model, group in frame.groupby("model", sort=False):
        good = usable(group)
        row: dict[str, Any] = {
            "model": model,
            "name": short_name(str(model)),
            "hidden_size": _first(group["hidden_size"]),
            "n_params": _first(group["n_params"]),
            "tokens_per_step": _first(group["tokens_per_step"]),
            "n_checkpoints": int(len(group)),
            "n_ok": int((group["status"] == "ok").sum()),
            "n_failed": int((group["status"] != "ok").sum()),
            "n_duplicates": int(group["duplicate_of"].notna().sum()),
        }
        if len(good):
            row.update(saturation_point(good["step"], good["cross_entropy"].astype(float)))
            row["saturates"] = bool(row["relative_rise"] > max_rise)
            row["collapse_step"], row["collapse_rise"] = jump_step(good["step"], good["singular_entropy"].astype(float), min_entropy_rise, from_step)
            row["anisotropy_jump_step"], row["anisotropy_rise"] = jump_step(
                good["step"], good["last_layer_anisotropy"].astype(float), min_anisotropy_rise, from_step
            )
            last = good.sort_values("step").iloc[-1]
            row["final_singular_entropy"] = float(last["singular_entropy"])
            row["final_anisotropy"] = float(last["last_layer_anisotropy"])
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("collapse_step", "anisotropy_jump_step", "best_step", "final_step"):
        if col in table:
            table[col] = table[col].astype("Int64")
    return table


def _first(series: pd.Series) -> Any:
    vals = series.dropna()
    return vals.iloc[0] if len(vals) else None


def run_saturation(
    output: str | Path,
    max_rise: float = DEFAULT_MAX_RISE,
    min_entropy_rise: float = DEFAULT_MIN_ENTROPY_RISE,
    min_anisotropy_rise: float = DEFAULT_MIN_ANISOTROPY_RISE,
    from_step: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the sweep records; write ``sweep.csv`` (per checkpoint), ``saturation.csv`` (per model)
    and one ``saturation`` record per model. Returns (per-model table, per-checkpoint table)."""
    from lmsat.experiments.sweep import sweep_records

    output = Path(output)
    records = sweep_records(output)
    frame = checkpoint_table(records)
    table = saturation_table(frame, max_rise, min_entropy_rise, min_anisotropy_rise, from_step)
    store = Store(output)
    settings = {"max_rise": max_rise, "min_entropy_rise": min_entropy_rise, "min_anisotropy_rise": min_anisotropy_rise, "from_step": from_step}
    for row in table.to_dict(orient="records"):
        clean = {k: (None if _missing(v) else v) for k, v in row.items()}
        keys = frame.loc[frame["model"] == row["model"], "key"].tolist()
        store.put(KIND, str(row["model"]), {"model": row["model"], "sweep_records": len(keys), **settings, "lmsat_version": __version__}, clean)
    atomic_write_csv(output / "sweep.csv", frame)
    atomic_write_csv(output / "saturation.csv", table)
    return table, frame


def _missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False
