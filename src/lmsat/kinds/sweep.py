"""``sweep`` records: one checkpoint's loss, last-layer anisotropy and head spectrum (``lmsat sweep``; docs/methods.md §1, §3, §5).

:attr:`SweepRecord.usable` is lmsat's one "usable checkpoint" rule (saturation,
downstream selection, scaling fit and the report all use it): measured without
failure (status ``ok``), not a duplicate of another revision's weights (a branch
serving the wrong weights would put a false point on the curve), finite loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lmsat.kinds.base import UNSET, KindRecord, integer, number
from lmsat.kinds.common import labelled, model_name


@dataclass(frozen=True)
class SweepRecord(KindRecord):
    KIND = "sweep"
    VERSION = 1
    WRITER = "lmsat sweep"

    status: str = UNSET
    error: str | None = UNSET
    cross_entropy: float | None = UNSET
    last_layer_anisotropy: float | None = UNSET
    singular_entropy: float | None = UNSET
    singular_entropy_linear: float | None = UNSET
    effective_rank: float | None = UNSET
    hidden_size: int | None = UNSET
    n_params: int | None = UNSET
    head_hash: str | None = UNSET
    weights_hash: str | None = UNSET
    duplicate_of: str | None = UNSET
    wall_time_s: float | None = UNSET

    @property
    def model(self) -> str:
        """The model as recorded (hub id or folder), not the display name."""
        return str(self.inputs.get("model"))

    @property
    def display_name(self) -> str:
        return model_name(self.inputs)

    @property
    def step(self) -> int | None:
        return integer(self.inputs.get("step"))

    @property
    def loss(self) -> float | None:
        return number(self.cross_entropy)

    @property
    def d(self) -> int | None:
        return integer(self.hidden_size)

    @property
    def usable(self) -> bool:
        """The one usable-checkpoint rule (module docstring)."""
        return self.status == "ok" and not self.duplicate_of and self.loss is not None and self.step is not None


COLUMNS = [
    "model", "name", "revision", "step", "status", "error", "cross_entropy", "last_layer_anisotropy",
    "singular_entropy", "singular_entropy_linear", "effective_rank", "hidden_size", "n_params",
    "tokens_per_step", "tokens_seen", "weights_hash", "head_hash", "duplicate_of", "wall_time_s", "key",
]
LABELS = {"model": "model", "name": "name", "revision": "revision", "step": "step", "status": "status", "error": "error",
          "cross_entropy": "loss (nats/token)", "last_layer_anisotropy": "last-layer anisotropy",
          "singular_entropy": "head singular entropy (nats)", "singular_entropy_linear": "head singular entropy, p = s/Σs (nats)",
          "effective_rank": "head effective rank", "hidden_size": "hidden size d", "n_params": "parameters",
          "tokens_per_step": "tokens per step", "tokens_seen": "tokens seen", "weights_hash": "weights hash", "head_hash": "head hash",
          "duplicate_of": "duplicate of", "wall_time_s": "wall time (s)", "key": "record"}


def _short(model: str) -> str:
    return Path(str(model).rstrip("/\\")).name or str(model)


def frame(records: Sequence[SweepRecord]) -> pd.DataFrame:
    """One row per checkpoint, sorted by model (smallest d, then parameters, then name) and step (the CSV ``sweep.csv``).

    ``tokens_seen`` = step x tokens_per_step (empty when tokens per step is unknown).
    """
    rows = []
    for rec in records:
        tps = rec.inputs.get("tokens_per_step")
        step = int(rec.inputs.get("step", 0))
        rows.append({
            "model": rec.inputs.get("model"), "name": _short(str(rec.inputs.get("model"))), "revision": rec.inputs.get("revision"),
            "step": step, "tokens_per_step": tps, "tokens_seen": step * int(tps) if tps else None, "key": rec.key,
            **{c: rec.results().get(c) for c in COLUMNS if c not in ("model", "name", "revision", "step", "tokens_per_step",
                                                                       "tokens_seen", "key")},
        })
    out = pd.DataFrame(rows, columns=COLUMNS)
    if out.empty:
        return out
    order = {m: k for k, m in enumerate(dict.fromkeys(_model_order(records)))}
    out["_order"] = out["model"].map(order)
    return out.sort_values(["_order", "step", "revision"]).drop(columns="_order").reset_index(drop=True)


def _model_order(records: Sequence[SweepRecord]) -> list[str]:
    """Models by hidden size then parameter count then name (smallest first), as the study lists them."""
    facts: dict[str, tuple[float, float, str]] = {}
    for rec in records:
        m = str(rec.inputs.get("model"))
        d = rec.results().get("hidden_size") or math.inf
        n = rec.results().get("n_params") or math.inf
        old = facts.get(m, (math.inf, math.inf, m))
        facts[m] = (min(old[0], d), min(old[1], n), m)
    return [m for m, _ in sorted(facts.items(), key=lambda kv: kv[1])]


def usable_rows(checkpoints: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`frame` that pass the usable-checkpoint rule (:attr:`SweepRecord.usable`)."""
    ok = checkpoints[(checkpoints["status"] == "ok") & checkpoints["duplicate_of"].isna()]
    return ok[pd.to_numeric(ok["cross_entropy"], errors="coerce").astype(float).map(math.isfinite)]


# The columns a reader needs (the CSV keeps them all).
SHOWN = ["name", "revision", "step", "status", "cross_entropy", "last_layer_anisotropy", "singular_entropy", "effective_rank",
         "hidden_size", "n_params", "tokens_seen", "duplicate_of"]


def table(records: Sequence[SweepRecord]) -> pd.DataFrame:
    """:func:`frame`'s readable columns, with human-readable names and units. Models with several seeds
    (``-seedN``, e.g. PolyPythias) become one row per group and step: its usable checkpoints' numbers as
    mean ± sd over seeds (lmsat.kinds.seeds; ``sweep.csv`` keeps every checkpoint)."""
    from lmsat.kinds.seeds import grouped_table, has_seed_groups

    out = frame(records)
    if not len(out) or not has_seed_groups(list(dict.fromkeys(str(n) for n in out["name"]))):
        return labelled(out[SHOWN], LABELS)
    values = ["cross_entropy", "last_layer_anisotropy", "singular_entropy", "singular_entropy_linear", "effective_rank"]
    return grouped_table(usable_rows(out), "name", ["step", "hidden_size", "n_params", "tokens_seen"], values, LABELS)


def series(records: Sequence[SweepRecord]) -> dict[str, Any]:
    """Per-checkpoint series of one model's usable records, by step: step, loss, singular entropy, last-layer anisotropy."""
    import numpy as np

    rows = sorted((r.step, r.loss, number(r.singular_entropy), number(r.last_layer_anisotropy)) for r in records if r.usable)
    col = lambda j: np.array([np.nan if t[j] is None else t[j] for t in rows], dtype=np.float64)
    return {"step": col(0), "loss": col(1), "singular_entropy": col(2), "last_layer_anisotropy": col(3)}
