"""``anisotropy`` records: per-layer anisotropy of one model on one token sample (``lmsat anisotropy``; docs/methods.md §1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lmsat.kinds.base import UNSET, integer, number
from lmsat.kinds.common import ModelRecord, labelled


@dataclass(frozen=True)
class AnisotropyRecord(ModelRecord):
    KIND = "anisotropy"
    VERSION = 1
    WRITER = "lmsat anisotropy"

    # One dict per layer (embedding output first): layer, depth, anisotropy, mean_norm.
    layers: list[dict[str, Any]] = UNSET
    last_layer_anisotropy: float = UNSET
    cross_entropy: float | None = UNSET
    is_causal: bool = UNSET

    @property
    def last(self) -> float | None:
        """Last-layer anisotropy: the stored value, else the last layer's."""
        last = number(self.last_layer_anisotropy)
        if last is None and self.layers:
            last = number(self.layers[-1].get("anisotropy"))
        return last

    @property
    def sample_tokens(self) -> int | None:
        return integer((self.inputs.get("token_sample") or {}).get("n_tokens"))


LABELS = {"model": "model", "revision": "revision", "dtype": "dtype", "layer": "layer", "depth": "normalised depth (0 = embeddings, 1 = last)",
          "anisotropy": "anisotropy (mean cosine similarity)", "mean_norm": "mean hidden-state norm", "token_sample": "token sample"}


def frame(records: Sequence[AnisotropyRecord]) -> pd.DataFrame:
    """One row per (model, layer) (machine column names; the CSV ``anisotropy.csv``)."""
    rows = []
    for rec in records:
        for layer in rec.layers or []:
            rows.append({"model": rec.model, "revision": rec.inputs.get("revision"), "dtype": rec.inputs.get("dtype"),
                         "layer": layer["layer"], "depth": layer["depth"], "anisotropy": layer["anisotropy"],
                         "mean_norm": layer.get("mean_norm"), "token_sample": (rec.inputs.get("token_sample") or {}).get("hash")})
    return pd.DataFrame(rows, columns=list(LABELS))


def table(records: Sequence[AnisotropyRecord]) -> pd.DataFrame:
    return labelled(frame(records), LABELS)
