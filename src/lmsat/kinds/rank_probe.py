"""``rank_probe`` records: one rank-r head W = AB trained on a frozen model's representations, and
``rank_probe_ref``, the full-rank references (a trained full-rank head, the model's own head)
(``lmsat rank-probe``; docs/methods.md §8).

A learning-rate search run (``stage`` = ``search``) is not a result; only ``final`` runs are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lmsat.kinds.base import UNSET, integer, number, value
from lmsat.kinds.common import ModelRecord, drop_empty, labelled


@dataclass(frozen=True)
class RankProbeRecord(ModelRecord):
    KIND = "rank_probe"
    VERSION = 1
    WRITER = "lmsat rank-probe"

    stage: str = UNSET
    head: str = UNSET
    parametrization: str = UNSET
    rank: int = UNSET
    lr: float = UNSET
    loss: float | None = UNSET
    loss_se: float | None = UNSET
    perplexity: float | None = UNSET
    accuracy: float | None = UNSET
    eval_tokens: int | None = UNSET
    w_error: float | None = UNSET
    dev_loss: float | None = UNSET
    dev_accuracy: float | None = UNSET
    train_loss: float | None = UNSET
    diverged: bool = UNSET
    steps: int = UNSET
    tokens_seen: int = UNSET
    seconds: float = UNSET

    @property
    def is_final(self) -> bool:
        """A result (not a learning-rate search run); the model's own head is always one."""
        return self.head == "own" or value(self.stage) in ("final", None)

    @property
    def r(self) -> int | None:
        return integer(self.rank) if integer(self.rank) is not None else integer(self.inputs.get("rank"))

    @property
    def validation_loss(self) -> float | None:
        return number(self.loss)


@dataclass(frozen=True)
class RankProbeRefRecord(RankProbeRecord):
    KIND = "rank_probe_ref"

    loss_from_features: float | None = UNSET
    accuracy_from_features: float | None = UNSET
    head_info: dict[str, Any] = UNSET


def points(records: Sequence[RankProbeRecord]) -> list[tuple[int, float, float | None]]:
    """(rank r, validation loss, accuracy) of the final probe runs, the best loss per rank, sorted by r."""
    best: dict[int, tuple[float, float | None]] = {}
    for rec in records:
        if not rec.is_final or rec.r is None or rec.validation_loss is None:
            continue
        if rec.r not in best or rec.validation_loss < best[rec.r][0]:
            best[rec.r] = (rec.validation_loss, number(rec.accuracy))
    return [(r, lo, ac) for r, (lo, ac) in sorted(best.items())]


LABELS = {"model": "model", "d": "hidden size d", "head": "head", "rank": "rank r", "lr": "learning rate",
          "loss": "validation loss (nats/token)", "loss_se": "standard error (nats/token)", "accuracy": "top-1 accuracy",
          "w_error": "W-error of the own head at r", "tokens_seen": "training tokens", "eval_tokens": "evaluation tokens"}


def frame(records: Sequence[RankProbeRecord]) -> pd.DataFrame:
    """Final runs (and references), one row each, sorted by model and rank (machine column names)."""
    rows = []
    for rec in records:
        if not rec.is_final:
            continue
        res = rec.results()
        rows.append({"model": rec.model, "d": rec.hidden_size, "head": res.get("head"), "rank": rec.r,
                     "lr": res.get("lr") if res.get("lr") is not None else rec.inputs.get("lr"), "loss": res.get("loss"),
                     "loss_se": res.get("loss_se"), "accuracy": res.get("accuracy"), "w_error": res.get("w_error"),
                     "tokens_seen": res.get("tokens_seen"), "eval_tokens": res.get("eval_tokens")})
    out = pd.DataFrame(rows)
    if len(out):
        out = out.sort_values(["model", "rank"], na_position="last").reset_index(drop=True)
    return drop_empty(out)


def table(records: Sequence[RankProbeRecord]) -> pd.DataFrame:
    return labelled(frame(records), LABELS)
