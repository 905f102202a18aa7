"""``downstream`` records (lm-evaluation-harness scores of one checkpoint) and ``downstream_table``
records (best against final checkpoint of one model) (``lmsat downstream``; docs/methods.md §11)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lmsat.kinds.base import UNSET, KindRecord
from lmsat.kinds.common import drop_empty, labelled


@dataclass(frozen=True)
class DownstreamRecord(KindRecord):
    KIND = "downstream"
    VERSION = 1
    WRITER = "lmsat downstream"

    tasks: dict[str, dict[str, Any]] = UNSET
    stderr: dict[str, dict[str, Any]] = UNSET
    higher_is_better: dict[str, dict[str, Any]] = UNSET
    n_samples: dict[str, Any] = UNSET
    duration_s: float = UNSET
    files: dict[str, str] = UNSET


@dataclass(frozen=True)
class DownstreamTableRecord(KindRecord):
    KIND = "downstream_table"
    VERSION = 1
    WRITER = "lmsat downstream"

    rows: list[dict[str, Any]] = UNSET
    best_is_final: bool = UNSET
    n_metrics: int = UNSET
    n_worse_at_final: int = UNSET
    n_judged: int = UNSET


COLUMNS = ["model", "task", "metric", "unit", "best_revision", "best_step", "final_revision", "final_step", "best", "final",
           "difference", "relative_change", "higher_is_better", "worse_at_final", "best_stderr", "final_stderr",
           "study_best", "study_final"]
LABELS = {"model": "model", "task": "task", "metric": "metric", "unit": "unit", "best_revision": "best revision", "best_step": "best step",
          "final_revision": "final revision", "final_step": "final step", "best": "best checkpoint", "final": "final checkpoint",
          "difference": "final - best", "relative_change": "final / best - 1", "higher_is_better": "higher is better",
          "worse_at_final": "worse at final", "best_stderr": "best standard error", "final_stderr": "final standard error",
          "study_best": "study: best", "study_final": "study: final", "task_set": "task set", "dtype": "dtype"}


def frame(records: Sequence[DownstreamTableRecord]) -> pd.DataFrame:
    """All comparison rows of ``downstream_table`` records, with the task-set id and dtype (the CSV ``downstream.csv``)."""
    rows = [{**{c: row.get(c) for c in COLUMNS}, "task_set": rec.inputs.get("task_set"), "dtype": rec.inputs.get("dtype")}
            for rec in records for row in (rec.rows or [])]
    return pd.DataFrame(rows, columns=[*COLUMNS, "task_set", "dtype"])


def table(records: Sequence[DownstreamTableRecord]) -> pd.DataFrame:
    return labelled(drop_empty(frame(records)), LABELS)
