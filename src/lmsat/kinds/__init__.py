"""Record kinds: the typed schema of every record lmsat writes, and the registry readers iterate.

One module per kind (``lmsat.kinds.<kind>``) owns a frozen results dataclass
(:class:`lmsat.kinds.base.KindRecord`: ``from_record`` checks the schema string
``lmsat.<kind>/N`` and upgrades older versions explicitly, ``to_record`` gives what
:meth:`lmsat.store.Store.put` writes) and the kind's table (``frame``: machine
column names, the CSV; ``table``: human-readable column names with units).

:data:`REGISTRY` maps a kind's name to its :class:`Kind` entry; the report, the demo
and the CLI go through it (:func:`typed`, :func:`read`), never through raw field
names. A kind not in the registry (a newer lmsat's, or a plug-in's) is shown as a
generic table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lmsat.kinds import (
    anisotropy,
    causality,
    downstream,
    head,
    ngram,
    rank_probe,
    saturation,
    scaling_fit,
    sweep,
    synth,
    train,
    verdict,
)
from lmsat.kinds.base import KindRecord
from lmsat.store import Record


@dataclass(frozen=True)
class Kind:
    """One registered record kind: its record class and its table."""

    name: str
    record: type[KindRecord]
    title: str
    table: Callable[[Sequence[Any]], pd.DataFrame] | None = None
    # An intermediate record another kind summarises (not shown in the report).
    intermediate: bool = False


# In the order the report shows them.
REGISTRY: dict[str, Kind] = {k.name: k for k in (
    Kind("synth", synth.SynthRecord, "Synthetic languages (generator truth)", synth.table),
    Kind("train", train.TrainRecord, "Trained models", train.table),
    Kind("ngram", ngram.NgramRecord, "Data dimension per corpus", ngram.table),
    Kind("ngram_counts", ngram.NgramCountsRecord, "n-gram counts", None, intermediate=True),
    Kind("anisotropy", anisotropy.AnisotropyRecord, "Anisotropy per layer", anisotropy.table),
    Kind("head", head.HeadRecord, "LM-head spectrum summary", head.table),
    Kind("sweep", sweep.SweepRecord, "Checkpoints", sweep.table),
    Kind("saturation", saturation.SaturationRecord, "Saturation per model", saturation.table),
    Kind("scaling_fit", scaling_fit.ScalingFitRecord, "Scaling-law fit", scaling_fit.table),
    Kind("rank_probe", rank_probe.RankProbeRecord, "Rank-probe results", rank_probe.table),
    Kind("rank_probe_ref", rank_probe.RankProbeRefRecord, "References: full-rank trained head and the model's own head",
         rank_probe.table),
    Kind("downstream", downstream.DownstreamRecord, "Downstream scores per checkpoint", None, intermediate=True),
    Kind("downstream_table", downstream.DownstreamTableRecord, "Downstream tasks: best vs final checkpoint", downstream.table),
    # lmsat diagnose's verdict: shown first, in words, not as a table
    Kind("verdict", verdict.VerdictRecord, "Verdict: is d binding?", None, intermediate=True),
    # lmsat causality's analysis: its own report section (report/causality.py), not a table
    Kind("causality", causality.CausalityRecord, "Causality: rank collapse and loss rise", None),
)}


def typed(rec: Record) -> KindRecord:
    """The typed view of one record (a UserError for a schema this lmsat does not read)."""
    kind = REGISTRY.get(rec.kind)
    if kind is None:
        raise KeyError(f"no registered kind '{rec.kind}'")
    return kind.record.from_record(rec)


def read(records: dict[str, list[Record]]) -> dict[str, list[Any]]:
    """kind -> typed records for every registered kind present; unregistered kinds keep their raw records."""
    return {k: ([typed(r) for r in recs] if k in REGISTRY else list(recs)) for k, recs in records.items()}


def ordered(kinds: Iterable[str]) -> list[str]:
    """Registered kinds in report order, then any others alphabetically."""
    kinds = set(kinds)
    return [k for k in REGISTRY if k in kinds] + sorted(kinds - set(REGISTRY))


__all__ = ["REGISTRY", "Kind", "KindRecord", "ordered", "read", "typed"]
