"""The parts of a report: sections holding tables and figures (built by :mod:`lmsat.report.content`
and the other report modules, rendered by :mod:`lmsat.report.html` and :mod:`lmsat.report.markdown`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Table:
    id: str
    title: str
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Figure:
    id: str
    title: str
    path: Path
    caption: str = ""


@dataclass
class Section:
    id: str
    title: str
    intro: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
