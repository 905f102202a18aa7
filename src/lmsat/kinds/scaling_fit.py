"""``scaling_fit`` records: the Chinchilla-form law fitted on final checkpoints and each model's
underperformance (``lmsat scaling``; docs/methods.md §6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lmsat.kinds.base import UNSET, KindRecord
from lmsat.kinds.common import labelled


@dataclass(frozen=True)
class ScalingFitRecord(KindRecord):
    KIND = "scaling_fit"
    VERSION = 1
    WRITER = "lmsat scaling"

    A: float = UNSET
    alpha: float = UNSET
    E: float = UNSET
    B: float = UNSET
    beta: float = UNSET
    rmse: float | None = UNSET
    n_points: int = UNSET
    fitted_models: list[str] = UNSET
    mean_final_underperformance: float | None = UNSET
    mean_best_underperformance: float | None = UNSET
    mean_over: str = UNSET
    notes: list[str] = UNSET
    # One dict per model: the rows of lmsat.experiments.scaling.scaling_table.
    models: list[dict[str, Any]] = UNSET


LABELS = {"A": "A", "alpha": "alpha", "E": "E (fixed)", "B": "B (fixed)", "beta": "beta (fixed)", "rmse": "RMSE of the loss (nats/token)",
          "n_points": "points in the fit", "mean_final_underperformance": "mean final underperformance L/L_law - 1",
          "mean_best_underperformance": "mean best underperformance L/L_law - 1", "mean_over": "mean over"}


def frame(records: Sequence[ScalingFitRecord]) -> pd.DataFrame:
    return pd.DataFrame([{k: r.results().get(k) for k in LABELS} for r in records], columns=list(LABELS))


def table(records: Sequence[ScalingFitRecord]) -> pd.DataFrame:
    return labelled(frame(records), LABELS)
