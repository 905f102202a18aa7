"""``causality`` records: onsets, lead/lag, co-occurrence and within-run association over the sweep and
train records of several run directories (``lmsat causality``; docs/causality.md, docs/methods.md §5).

One record per analysis folder (key ``analysis``); its tables are ``causality_runs.csv`` (one row per
run) and ``causality_groups.csv`` (one row per seed group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmsat.kinds.base import UNSET, KindRecord


@dataclass(frozen=True)
class CausalityRecord(KindRecord):
    KIND = "causality"
    VERSION = 1
    WRITER = "lmsat causality"

    thresholds: dict[str, Any] = UNSET  # the onset, collapse and co-occurrence thresholds used (all adjustable)
    runs: list[dict[str, Any]] = UNSET  # one row per (model, seed): onsets, final rank, rise, correlations
    groups: list[dict[str, Any]] = UNSET  # one row per seed group: means, spreads, lead/lag with its interval
    lead_lag: list[dict[str, Any]] = UNSET  # per collapse sign (rank, entropy, anisotropy): lag of collapse before rise
    cooccurrence: dict[str, dict[str, int]] = UNSET  # by criterion: low/high rank x saturates/not counts
    summary: dict[str, Any] = UNSET
    verdict: list[str] = UNSET  # what the evidence supports, in plain sentences
