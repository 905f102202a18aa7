"""Saturation analysis of stored sweep records (docs/methods.md §5): no model is loaded.

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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lmsat import __version__
from lmsat.kinds import sweep as sweep_kind
from lmsat.kinds.base import as_kind
from lmsat.kinds.saturation import SaturationRecord
from lmsat.kinds.sweep import SweepRecord
from lmsat.loading.checkpoints import short_name
from lmsat.measure.onsets import rise_onset
from lmsat.measure.saturation import best_final_rise
from lmsat.store import Record, Store, atomic_write_csv

KIND = "saturation"
DEFAULT_MAX_RISE = 0.01
DEFAULT_MIN_ENTROPY_RISE = 1.0
DEFAULT_MIN_ANISOTROPY_RISE = 0.3

CHECKPOINT_COLUMNS = sweep_kind.COLUMNS


def checkpoint_table(records: Sequence[Record] | Sequence[SweepRecord]) -> pd.DataFrame:
    """One row per sweep record (sorted by model, then step): :func:`lmsat.kinds.sweep.frame`.

    ``tokens_seen`` = step x tokens_per_step (empty when tokens per step is unknown).
    """
    return sweep_kind.frame([as_kind(r, SweepRecord) for r in records])


def usable(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``ok`` checkpoints that are not duplicates, with a finite loss (:attr:`lmsat.kinds.sweep.SweepRecord.usable`)."""
    return sweep_kind.usable_rows(frame)


# Best step/loss (lowest loss; the earliest on ties), final step/loss (last step), relative rise final/best - 1.
saturation_point = best_final_rise


def jump_step(steps: Sequence[int], values: Sequence[float], min_rise: float, from_step: int = 0) -> tuple[int | None, float]:
    """(step of the jump or None, size of the rise m - lo): the onset rule of
    :func:`lmsat.measure.onsets.rise_onset`, shared with ``lmsat causality`` (module docstring).

    Only checkpoints with step >= ``from_step`` and a finite value count.
    """
    onset = rise_onset(steps, values, min_rise, from_step)
    return onset.step, onset.rise


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
        inputs = {"model": row["model"], "sweep_records": len(keys), **settings, "lmsat_version": __version__}
        SaturationRecord(key=str(row["model"]), inputs=inputs, **clean).put(store)
    atomic_write_csv(output / "sweep.csv", frame)
    atomic_write_csv(output / "saturation.csv", table)
    return table, frame


def _missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False
