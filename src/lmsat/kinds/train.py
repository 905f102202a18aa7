"""``train`` records: one small model trained by ``lmsat train`` and its held-out losses (docs/methods.md §5, §10).

Schema 2 stores the head's effective rank at every checkpoint (array
``head_effective_rank``), so the training figures read it instead of recomputing
it; schema 1 records are upgraded on read (derived from their stored per-checkpoint
singular values by the same formula, docs/methods.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lmsat.kinds.base import UNSET, KindRecord, integer
from lmsat.kinds.common import drop_empty, labelled


@dataclass(frozen=True)
class TrainRecord(KindRecord):
    KIND = "train"
    VERSION = 2
    READS = (1,)
    WRITER = "lmsat train"

    model_dir: str = UNSET
    hidden_size: int = UNSET
    n_params: int = UNSET
    n_params_non_embedding: int = UNSET
    head: str = UNSET  # softmax | mos:K | sigsoftmax | mlp (docs/methods.md §9)
    head_parameters: int = UNSET
    head_flops_per_token: int = UNSET
    steps: int = UNSET
    tokens: int = UNSET
    checkpoints: list[str] = UNSET
    final_train_loss: float | None = UNSET
    final_eval_loss: float = UNSET
    best_eval_loss: float = UNSET
    best_step: int = UNSET
    relative_rise: float = UNSET
    reference_entropy: float | None = UNSET
    final_gap: float | None = UNSET
    final_gap_standard_error: float | None = UNSET
    best_gap: float | None = UNSET
    final_last_layer_anisotropy: float | None = UNSET
    final_head_singular_entropy: float | None = UNSET
    final_head_effective_rank: float | None = UNSET
    wall_seconds: float = UNSET
    tokens_per_second: float | None = UNSET

    @property
    def d(self) -> int | None:
        return integer(self.hidden_size)

    def head_effective_rank(self) -> np.ndarray | None:
        """exp H(s²/Σs²) of the head at every checkpoint: stored (schema 2), else from the stored spectra (schema 1 upgrade)."""
        arrays = self.load_arrays()
        if "head_effective_rank" in arrays:
            return np.asarray(arrays["head_effective_rank"], dtype=np.float64)
        spectra = arrays.get("head_singular_values")
        if spectra is None:
            return None
        from lmsat.measure.spectrum import effective_rank

        return np.array([effective_rank(s) for s in spectra], dtype=np.float64)


LABELS = {"model": "model", "hidden_size": "hidden size d", "head": "head", "n_params": "parameters", "steps": "steps", "tokens": "training tokens",
          "final_eval_loss": "final held-out loss (nats/token)", "best_eval_loss": "best held-out loss (nats/token)",
          "best_step": "best step", "relative_rise": "relative rise final/best - 1", "reference_entropy": "true entropy (nats/token)",
          "final_gap": "final gap to the true entropy (nats/token)", "final_gap_standard_error": "standard error of the gap (nats/token)",
          "best_gap": "best gap to the true entropy (nats/token)", "final_head_effective_rank": "head effective rank (final)",
          "final_last_layer_anisotropy": "last-layer anisotropy (final)"}


def frame(records: Sequence[TrainRecord]) -> pd.DataFrame:
    """One row per trained model, sorted by d (machine column names)."""
    rows = [{"model": rec.key, **{c: rec.results()[c] for c in LABELS if c in rec.results()}} for rec in records]
    out = pd.DataFrame(rows)
    if len(out) and "hidden_size" in out:
        out = out.sort_values(["hidden_size", "model"]).reset_index(drop=True)
    return drop_empty(out)


def table(records: Sequence[TrainRecord]) -> pd.DataFrame:
    """:func:`frame` with readable labels; models trained with several seeds (same name but for ``-seedN``,
    same settings) become one row per group with each number as mean ± sd (lmsat.kinds.seeds)."""
    from lmsat.kinds.seeds import SEED_INPUTS, grouped_table, has_seed_groups

    out = frame(records)
    if not len(out) or not has_seed_groups(list(out["model"])):
        return labelled(out, LABELS)
    settings = {rec.key: repr(sorted((k, repr(v)) for k, v in rec.inputs.items()
                                     if k not in (*SEED_INPUTS, "model", "device", "lmsat_version"))) for rec in records}
    out["_settings"] = out["model"].map(settings)
    shown = [c for c in LABELS if c not in ("model", "hidden_size") and c in out.columns]
    numeric = [c for c in shown if pd.api.types.is_numeric_dtype(out[c])]
    keys = ["hidden_size", *(c for c in shown if c not in numeric), "_settings"]
    return grouped_table(out, "model", keys, numeric, LABELS)


# The columns `lmsat train` prints (short headers for a terminal; losses in nats/token): the CSV keeps them all.
SUMMARY = {"model": "model", "hidden_size": "d", "head": "head", "final_eval_loss": "final loss", "best_eval_loss": "best loss",
           "best_step": "best step", "relative_rise": "rise", "reference_entropy": "entropy", "final_gap": "gap",
           "final_head_effective_rank": "head eff. rank", "final_last_layer_anisotropy": "anisotropy"}


def summary_table(records: Sequence[TrainRecord]) -> pd.DataFrame:
    """:func:`table` cut to the :data:`SUMMARY` columns, with short headers (seed groups kept as in :func:`table`)."""
    out = table(records)
    keep = {}
    for c, short in SUMMARY.items():  # a seed group's numbers are headed "<label> (mean ± sd)" (lmsat.kinds.seeds)
        for col, head in ((LABELS[c], short), (f"{LABELS[c]} (mean ± sd)", f"{short} (mean ± sd)")):
            if col in out.columns:
                keep[col] = head
        if c == "hidden_size" and "seeds" in out.columns:
            keep["seeds"] = "seeds"
    return out[list(keep)].rename(columns=keep)
