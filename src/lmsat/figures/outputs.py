"""Derived views of a run directory, refreshed by the library after each run (not by CLI bodies).

Each ``refresh_<kind>(run_dir)`` rewrites the kind's CSV (``<run_dir>/<kind>.csv``, the
kind's :func:`frame`) and its figures (``<run_dir>/figures/*.png``) from the stored
records only, so the Python API and the CLI leave the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lmsat.kinds import anisotropy as anisotropy_kind
from lmsat.kinds import head as head_kind
from lmsat.store import Store, atomic_write_csv


@dataclass
class Outputs:
    """What a refresh wrote: the kind's table (machine column names), its CSV and its figures."""

    frame: pd.DataFrame
    csv: Path
    figures: list[Path] = field(default_factory=list)


def refresh_anisotropy(run_dir: str | os.PathLike[str]) -> Outputs:
    """``anisotropy.csv`` and ``figures/anisotropy.png`` from every anisotropy record of ``run_dir``."""
    from lmsat.figures.models import plot_anisotropy_by_depth

    run_dir = Path(run_dir)
    records = anisotropy_kind.AnisotropyRecord.load(Store(run_dir, readonly=True))
    frame = anisotropy_kind.frame(records)
    atomic_write_csv(run_dir / "anisotropy.csv", frame)
    return Outputs(frame, run_dir / "anisotropy.csv", [plot_anisotropy_by_depth(records, run_dir / "figures" / "anisotropy.png")])


def refresh_head(run_dir: str | os.PathLike[str]) -> Outputs:
    """``head.csv``, ``figures/head_spectrum.png`` and ``figures/head_w_error.png`` from every head record of ``run_dir``."""
    from lmsat.figures.models import plot_head_spectrum, plot_head_w_error

    run_dir = Path(run_dir)
    records = head_kind.HeadRecord.load(Store(run_dir, readonly=True))
    frame = head_kind.frame(records)
    atomic_write_csv(run_dir / "head.csv", frame)
    figures = [plot_head_spectrum(records, run_dir / "figures" / "head_spectrum.png"),
               plot_head_w_error(records, run_dir / "figures" / "head_w_error.png")]
    return Outputs(frame, run_dir / "head.csv", figures)


def refresh_sweep(run_dir: str | os.PathLike[str], fit: dict | None = None) -> Outputs:
    """``sweep.csv`` and the five sweep figures (study Fig. 1a, 1b, 3, 4, 5) from the sweep records of ``run_dir``.

    Fig. 1b draws ``fit`` (a scaling fit's results) or, when None, the stored ``scaling_fit`` record if any.
    """
    from lmsat.figures.sweep import draw_sweep_figures
    from lmsat.kinds import sweep as sweep_kind
    from lmsat.kinds.scaling_fit import ScalingFitRecord

    run_dir = Path(run_dir)
    store = Store(run_dir, readonly=True)
    records = sweep_kind.SweepRecord.load(store)
    if fit is None:
        stored = store.get(ScalingFitRecord.KIND, "fit")
        fit = ScalingFitRecord.from_record(stored).results() if stored is not None else None
    frame = sweep_kind.frame(records)
    atomic_write_csv(run_dir / "sweep.csv", frame)
    figures = draw_sweep_figures(frame, [r.record for r in records], fit, run_dir / "figures")
    return Outputs(frame, run_dir / "sweep.csv", list(figures.values()))


def refresh_train(run_dir: str | os.PathLike[str]) -> Outputs:
    """``training.csv`` (the train kind's frame) and the training figures from every train record of ``run_dir``."""
    from lmsat.figures.training import plot_family
    from lmsat.kinds import train as train_kind

    run_dir = Path(run_dir)
    records = train_kind.TrainRecord.load(Store(run_dir, readonly=True))
    frame = train_kind.frame(records)
    atomic_write_csv(run_dir / "training.csv", frame)
    figures = plot_family([r.record for r in records], run_dir / "figures") if records else []
    return Outputs(frame, run_dir / "training.csv", figures)


def refresh_synth(language_dir: str | os.PathLike[str]) -> Outputs:
    """``synth.csv`` (the language's generator truth) and ``figures/true_spectra.png`` from its synth record."""
    from lmsat.figures.training import plot_true_spectra
    from lmsat.kinds import synth as synth_kind

    language_dir = Path(language_dir)
    records = synth_kind.SynthRecord.load(Store(language_dir, readonly=True))
    frame = synth_kind.frame(records)
    atomic_write_csv(language_dir / "synth.csv", frame)
    figures = [plot_true_spectra({str(r.family): r.record for r in records}, language_dir / "figures" / "true_spectra.png")] if records else []
    return Outputs(frame, language_dir / "synth.csv", figures)


def refresh_downstream(run_dir: str | os.PathLike[str]) -> Outputs:
    """``downstream.csv``: every best-vs-final comparison row of the run directory's downstream_table records."""
    from lmsat.kinds import downstream as downstream_kind

    run_dir = Path(run_dir)
    frame = downstream_kind.frame(downstream_kind.DownstreamTableRecord.load(Store(run_dir, readonly=True)))
    atomic_write_csv(run_dir / "downstream.csv", frame)
    return Outputs(frame, run_dir / "downstream.csv")


def refresh_causality(output: str | os.PathLike[str]) -> Outputs:
    """``figures/causality.png`` from the stored ``causality`` record of ``output`` (lmsat causality writes the
    record and its CSV tables, ``causality_runs.csv`` and ``causality_groups.csv``)."""
    from lmsat.figures.causality import plot_causality
    from lmsat.kinds.causality import CausalityRecord

    output = Path(output)
    (record,) = CausalityRecord.load(Store(output, readonly=True))
    figure = plot_causality(record.results(), output / "figures" / "causality.png")
    return Outputs(pd.DataFrame(record.groups), output / "causality_groups.csv", [figure])
