"""``head`` records: the LM head's singular spectrum (``lmsat head``; docs/methods.md §3, §4).

Schema 2 stores the W-error curve (array ``w_error``) next to the singular values,
so figures and the report read it instead of recomputing it; schema 1 records are
upgraded on read (the curve is derived from their stored singular values by the
same formula, docs/methods.md §4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lmsat.kinds.base import UNSET, integer
from lmsat.kinds.common import ModelRecord, labelled


@dataclass(frozen=True)
class HeadRecord(ModelRecord):
    KIND = "head"
    VERSION = 2
    READS = (1,)
    WRITER = "lmsat head"

    n_singular_values: int = UNSET
    singular_entropy: float = UNSET
    singular_entropy_linear: float = UNSET
    max_singular_entropy: float = UNSET
    effective_rank: float = UNSET
    effective_rank_linear: float = UNSET
    s1: float = UNSET
    condition_number: float | None = UNSET
    w_error_d8: float = UNSET
    w_error_d4: float = UNSET
    w_error_d2: float = UNSET
    head: dict[str, Any] = UNSET

    @property
    def vocab_rows(self) -> int | None:
        return integer((self.head or {}).get("vocab_rows"))

    @property
    def tied(self) -> bool | None:
        return (self.head or {}).get("tied")

    def singular_values(self) -> np.ndarray | None:
        return self.load_arrays().get("singular_values") if "singular_values" in self.arrays else None

    def w_error_curve(self) -> np.ndarray | None:
        """W-error(k), k = 0..d: the stored curve (schema 2), else derived from the stored spectrum (schema 1 upgrade)."""
        arrays = self.load_arrays()
        if "w_error" in arrays:
            return np.asarray(arrays["w_error"], dtype=np.float64)
        s = arrays.get("singular_values")
        if s is None:
            return None
        from lmsat.measure.spectrum import w_error_curve

        return w_error_curve(s)


LABELS = {
    "model": "model", "revision": "revision", "hidden_size": "hidden size d", "vocab_rows": "vocabulary rows V",
    "singular_entropy": "singular entropy (nats, p = s²/Σs²)", "singular_entropy_linear": "singular entropy (nats, p = s/Σs)",
    "max_singular_entropy": "maximum ln d (nats)", "effective_rank": "effective rank exp H (p = s²/Σs²)",
    "effective_rank_linear": "effective rank exp H (p = s/Σs)", "w_error_d8": "W-error at d/8", "w_error_d4": "W-error at d/4",
    "w_error_d2": "W-error at d/2", "s1": "largest singular value s₁", "condition_number": "condition number s₁/s_d",
    "n_singular_values": "singular values", "tied": "tied to the input embedding",
}
COLUMNS = ("model", "revision", "hidden_size", "vocab_rows", "singular_entropy", "singular_entropy_linear", "max_singular_entropy",
           "effective_rank", "effective_rank_linear", "w_error_d8", "w_error_d4", "w_error_d2", "s1", "condition_number",
           "n_singular_values", "tied")


def frame(records: Sequence[HeadRecord]) -> pd.DataFrame:
    """One row per model (machine column names; the CSV ``head.csv``)."""
    rows = []
    for h in records:
        row: dict[str, Any] = {"model": h.model, "revision": h.inputs.get("revision"), "hidden_size": h.hidden_size,
                               "vocab_rows": h.vocab_rows, "tied": h.tied}
        row.update({c: h.results().get(c) for c in COLUMNS if c not in row})
        rows.append({c: row.get(c) for c in COLUMNS})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def table(records: Sequence[HeadRecord]) -> pd.DataFrame:
    """:func:`frame` with human-readable column names and units."""
    return labelled(frame(records), LABELS)
