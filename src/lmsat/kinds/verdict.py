"""``verdict`` records: `lmsat diagnose`'s answer to "is d binding on this data?" (docs/methods.md §12).

One record per diagnose folder (key ``verdict``), recomputed from the folder's stage
records on every run. The report shows it first, before the tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmsat.kinds.base import UNSET, KindRecord, integer

STATUSES = ("binding", "partly binding", "not binding", "inconclusive")


@dataclass(frozen=True)
class VerdictRecord(KindRecord):
    KIND = "verdict"
    VERSION = 1
    WRITER = "lmsat diagnose"

    status: str = UNSET  # one of STATUSES
    hidden_size: int = UNSET
    reason: str = UNSET
    evidence: dict[str, Any] = UNSET  # label (naming what it is measured on) -> value
    assumptions: list[str] = UNSET
    recommendation: str = UNSET
    own_head_note: str | None = UNSET
    corpus: str = UNSET
    tolerance: float = UNSET  # nats/token: a loss difference below it is "no cost"

    @property
    def d(self) -> int | None:
        return integer(self.hidden_size)
