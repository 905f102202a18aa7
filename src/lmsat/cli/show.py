"""Terminal output: tables and one-line messages (rich)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console()


def _print_table(table: Table) -> None:
    """A table at the terminal's width; off a terminal (a log file, a pipe) at its full width, so no number is cut."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(width=max(out.width, 1000)).print(table)  # the table keeps its natural width (not expanded)


def say(message: str) -> None:
    out.print(message, highlight=False, soft_wrap=True)


def _fmt(value: Any, floats: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{floats}f}"
    return str(value)


def print_table(frame: Any, title: str | None = None, floats: int = 4) -> None:
    """Print a pandas DataFrame as a rich table."""
    table = Table(title=title, show_lines=False)
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "fiu" else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(_fmt(v, floats) for v in row))
    _print_table(table)


def print_transposed(frame: Any, label_columns: list[str], rows: dict[str, str], title: str | None = None, floats: int = 4) -> None:
    """Print one column per record (labelled by ``label_columns``) and one row per metric."""
    table = Table(title=title)
    table.add_column("")
    for _, rec in frame.iterrows():
        parts = [str(rec[c]) for c in label_columns if rec.get(c) not in (None, "") and rec.get(c) == rec.get(c)]
        label = "@".join(parts)
        table.add_column(label.split("/")[-1] if len(label) > 40 else label, justify="right")
    for name, col in rows.items():
        table.add_row(name, *(_fmt(rec[col], floats) for _, rec in frame.iterrows()))
    _print_table(table)
