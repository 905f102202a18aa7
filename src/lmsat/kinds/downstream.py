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
           "difference", "relative_change", "worse_at_final", "best_stderr", "final_stderr", "study_best", "study_final"]
LABELS = {"model": "model", "task": "task", "metric": "metric", "unit": "unit", "best_revision": "best revision", "best_step": "best step",
          "final_revision": "final revision", "final_step": "final step", "best": "best checkpoint", "final": "final checkpoint",
          "difference": "final - best", "relative_change": "final / best - 1", "worse_at_final": "worse at final",
          "best_stderr": "best standard error", "final_stderr": "final standard error", "study_best": "study: best",
          "study_final": "study: final"}


def frame(records: Sequence[DownstreamTableRecord]) -> pd.DataFrame:
    rows = [{c: row.get(c) for c in COLUMNS} for rec in records for row in (rec.rows or [])]
    return drop_empty(pd.DataFrame(rows, columns=COLUMNS))


def table(records: Sequence[DownstreamTableRecord]) -> pd.DataFrame:
    return labelled(frame(records), LABELS)
