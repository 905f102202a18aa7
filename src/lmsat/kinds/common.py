"""Facts every model-measuring kind reads the same way: the model's display name, its checkpoint step."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import pandas as pd

from lmsat.kinds.base import KindRecord, integer
from lmsat.loading.checkpoints import step_from_name


def model_name(inputs: Mapping[str, Any]) -> str:
    """The model's display name from a record's inputs (no revision): last path part or GGUF stem.

    A checkpoint folder (``fam/model/step400`` as ``lmsat train`` writes it, or
    ``checkpoint_500``) is the model at that step: the name is its parent's.
    """
    if inputs.get("gguf_file"):
        return PurePath(str(inputs["gguf_file"])).stem
    name = str(inputs.get("model") or "?").rstrip("/")
    parts = [p for p in name.split("/") if p]
    if len(parts) > 1 and step_from_name(parts[-1]) is not None:
        parts = parts[:-1]
    return parts[-1] if parts else name


def labelled(frame: pd.DataFrame, labels: Mapping[str, str]) -> pd.DataFrame:
    """``frame`` with its columns renamed to human-readable names with units (unknown columns kept)."""
    return frame.rename(columns=dict(labels))


def drop_empty(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.dropna(axis=1, how="all") if len(frame) else frame


class ModelRecord(KindRecord):
    """A record of one model's measurement: its display name and hidden size, read from the inputs."""

    @property
    def model(self) -> str:
        return model_name(self.inputs)

    @property
    def hidden_size(self) -> int | None:
        return integer(self.inputs.get("hidden_size"))
