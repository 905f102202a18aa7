"""``saturation`` records: one model's best/final checkpoint, loss rise, collapse and anisotropy-jump steps
(``lmsat saturation``; docs/methods.md §5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from lmsat.kinds.base import UNSET, KindRecord
from lmsat.kinds.common import labelled


@dataclass(frozen=True)
class SaturationRecord(KindRecord):
    KIND = "saturation"
    VERSION = 1
    WRITER = "lmsat saturation"

    model: str = UNSET
    name: str = UNSET
    hidden_size: int | None = UNSET
    n_params: int | None = UNSET
    tokens_per_step: int | None = UNSET
    n_checkpoints: int = UNSET
    n_ok: int = UNSET
    n_failed: int = UNSET
    n_duplicates: int = UNSET
    best_step: int | None = UNSET
    best_loss: float | None = UNSET
    final_step: int | None = UNSET
    final_loss: float | None = UNSET
    relative_rise: float | None = UNSET
    saturates: bool | None = UNSET
    collapse_step: int | None = UNSET
    collapse_rise: float | None = UNSET
    anisotropy_jump_step: int | None = UNSET
    anisotropy_rise: float | None = UNSET
    final_singular_entropy: float | None = UNSET
    final_anisotropy: float | None = UNSET


LABELS = {"model": "model", "name": "name", "hidden_size": "hidden size d", "n_params": "parameters", "tokens_per_step": "tokens per step",
          "n_checkpoints": "checkpoints", "n_ok": "measured", "n_failed": "failed", "n_duplicates": "duplicates",
          "best_step": "best step", "best_loss": "best loss (nats/token)", "final_step": "final step", "final_loss": "final loss (nats/token)",
          "relative_rise": "relative rise final/best - 1", "saturates": "saturates", "collapse_step": "spectrum-collapse step",
          "collapse_rise": "singular-entropy rise (nats)", "anisotropy_jump_step": "anisotropy-jump step", "anisotropy_rise": "anisotropy rise",
          "final_singular_entropy": "final singular entropy (nats)", "final_anisotropy": "final last-layer anisotropy"}


def frame(records: Sequence[SaturationRecord]) -> pd.DataFrame:
    fields = SaturationRecord.result_fields()
    return pd.DataFrame([{f: r.results().get(f) for f in fields} for r in records], columns=fields)


def table(records: Sequence[SaturationRecord]) -> pd.DataFrame:
    """:func:`frame` with readable labels; models released or trained with several seeds (``-seedN``) become one
    row per group: each number as mean ± sd over seeds, ``saturates`` as k/n (lmsat.kinds.seeds)."""
    from lmsat.kinds.seeds import grouped_table, has_seed_groups

    out = frame(records)
    if not len(out) or not has_seed_groups([str(n) for n in out["name"]]):
        return labelled(out, LABELS)
    values = ["best_step", "best_loss", "final_step", "final_loss", "relative_rise", "collapse_step", "collapse_rise",
              "anisotropy_jump_step", "anisotropy_rise", "final_singular_entropy", "final_anisotropy"]
    return grouped_table(out, "name", ["hidden_size", "n_params", "tokens_per_step"], values, LABELS, counts=["saturates"])
