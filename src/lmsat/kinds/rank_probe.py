"""``rank_probe`` records: one rank-r head W = AB trained on a frozen model's representations, and
``rank_probe_ref``, the full-rank references (a trained full-rank head, the model's own head)
(``lmsat rank-probe``; docs/methods.md §8).

A learning-rate search run (``stage`` = ``search``) is not a result; only ``final`` runs are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

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
    dev_tokens: int | None = UNSET  # held-out tokens of the learning-rate search's dev split
    train_loss: float | None = UNSET
    diverged: bool = UNSET
    steps: int = UNSET
    tokens_seen: int = UNSET
    seconds: float = UNSET
    # Written since --head / --init (issue 14); absent in older records (softmax head, gaussian init).
    head_function: str = UNSET
    init: str = UNSET
    lr_at_grid_edge: bool = UNSET
    step0_loss: float | None = UNSET
    step0_loss_se: float | None = UNSET
    step0_accuracy: float | None = UNSET
    search_dev_loss: dict[str, float | None] = UNSET
    train_tokens_per_s: float | None = UNSET
    n_parameters: int = UNSET
    flops_per_token: int = UNSET

    @classmethod
    def of(cls, key: str, inputs: Mapping[str, Any], results: Mapping[str, Any]) -> Self:
        """The record ``key`` with ``inputs`` and the results dict a writer computed (typed fields set,
        the rest kept verbatim in ``extra``): ``of(k, i, r).results() == r`` up to key order."""
        names = set(cls.result_fields())
        typed = {k: v for k, v in results.items() if k in names}
        extra = {k: v for k, v in results.items() if k not in names}
        return cls(key=key, inputs=dict(inputs), extra=extra, **typed)

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
    # The SVD-truncation curve (head "svd-truncation"): ranks and held-out losses (nats/token).
    ranks: list[int] = UNSET
    losses: list[float] = UNSET


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


# --- the run directory's rank_probe.csv and the command's printed table ------------------------------


def run_frame(records: Sequence[RankProbeRecord]) -> pd.DataFrame:
    """``rank_probe.csv``: one row per model and head (final runs and the own head; no search runs, no
    truncation curve), in the order given, then sorted by model, head (low-rank, full-rank, own), head
    function, init, rank and parametrization.

    Columns: model (record key of the model), revision, gguf_file, head (low-rank / full-rank / own),
    parametrization ("A B" or "W"), head_function (softmax, mos:K, sigsoftmax, mlp), init (svd or
    gaussian), rank, lr, loss (nats/token), loss_se (its standard error over the held-out tokens),
    step0_loss (held-out loss before training: for an SVD-initialised softmax head, the truncation's),
    perplexity, accuracy, w_error (of the model's own head at that rank), tokens_seen, eval_tokens,
    settings_hash.
    """
    rows = []
    for rec in records:
        res = rec.results()
        if not (res.get("stage") == "final" or res.get("head") == "own"):
            continue
        own = res.get("head") == "own"
        rows.append(
            {
                "model": rec.inputs.get("model_key"),
                "revision": rec.inputs.get("revision"),
                "gguf_file": rec.inputs.get("gguf_file"),
                "head": res.get("head"),
                "parametrization": res.get("parametrization", "W" if own else None),
                # runs of lmsat versions before --head/--init: the softmax head, the study's gaussian init
                "head_function": None if own else res.get("head_function", "softmax"),
                "init": None if own else res.get("init", "gaussian"),
                "rank": res.get("rank"),
                "lr": res.get("lr"),
                "loss": res.get("loss"),
                "loss_se": res.get("loss_se"),
                "step0_loss": res.get("step0_loss"),
                "perplexity": res.get("perplexity"),
                "accuracy": res.get("accuracy"),
                "w_error": res.get("w_error") if not own else 0.0,
                "tokens_seen": res.get("tokens_seen"),
                "eval_tokens": res.get("eval_tokens"),
                "settings_hash": rec.inputs.get("settings_hash"),
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    for col in ("rank", "tokens_seen", "eval_tokens"):
        out[col] = out[col].astype("Int64")
    order = {"low-rank": 0, "full-rank": 1, "own": 2}
    out["_o"] = out["head"].map(order)
    return (out.sort_values(["model", "_o", "head_function", "init", "rank", "parametrization"], na_position="last")
            .drop(columns="_o").reset_index(drop=True))


def display_table(frame: pd.DataFrame, label: Any) -> pd.DataFrame:
    """The table ``lmsat rank-probe`` prints, from :func:`run_frame`: model (``label(inputs)`` of its
    model, revision and GGUF file), head (A B / full A B / full W / own, plus the head function when
    not softmax), init, r, lr, step-0 loss, loss (nats/token), perplexity, top-1, W-error."""
    if frame.empty:
        return frame
    return pd.DataFrame(
        {
            "model": [label({"model": m, "revision": r, "gguf_file": g})
                      for m, r, g in zip(frame["model"], frame["revision"], frame["gguf_file"])],
            "head": [{"low-rank": "A B", "own": "own"}.get(h, f"full {p}") + ("" if f is None or pd.isna(f) or f == "softmax" else f" {f}")
                     for h, p, f in zip(frame["head"], frame["parametrization"], frame["head_function"])],
            "init": frame["init"],
            "r": pd.Series([int(v) for v in frame["rank"]], dtype=object),
            "lr": frame["lr"],
            "step 0": frame["step0_loss"],
            "loss": frame["loss"],
            "ppl": frame["perplexity"],
            "top-1": frame["accuracy"],
            "W-error": frame["w_error"],
        }
    )
