"""Pipelines: commands composed into one run (the top of the data flow, below the CLI).

A pipeline calls the library functions behind several commands in order (synth,
train, sweep, ngram-rank, rank-probe, report, ...) and never measures anything
itself. It may import every layer below it: loading, measure, experiments,
store, figures and report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmsat.errors import UserError

Stage = tuple[str, Callable[[], Any]]


def previous_inputs(output: Path, marker: str, what: str) -> Any:
    """The inputs a pipeline folder was made with (its ``marker`` json), None for a new folder.

    Refuses (one line) a path that is a file, and a non-empty folder without the marker, so a
    pipeline never writes into someone else's files. An unreadable marker reads as ``{}``
    (other inputs: the caller refuses it).
    """
    if output.exists() and not output.is_dir():
        raise UserError(f"'{output}' is a file; give a folder for the {what} (e.g. -o lmsat-runs/{what}).")
    path = output / marker
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
    if output.is_dir() and any(output.iterdir()):
        raise UserError(f"'{output}' is not empty and holds no lmsat {what}; give another -o (or an empty folder).")
    return None


def run_stages(stages: Sequence[Stage], say: Callable[[str], None], seconds: dict[str, float], total: int) -> None:
    """Run ``stages`` in order with ``[i/total] title ...`` / ``done in N s`` lines; wall seconds into ``seconds``."""
    for i, (title, stage) in enumerate(stages, start=1):
        say(f"[{i}/{total}] {title} ...")
        start = time.perf_counter()
        stage()
        seconds[title] = time.perf_counter() - start
        say(f"[{i}/{total}] {title}: done in {seconds[title]:.0f} s")
