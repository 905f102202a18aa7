"""`lmsat report`: one readable document from the records of one or more run directories.

Data flow: run directories -> records (:class:`lmsat.store.Store`) -> diagnosis
(:mod:`lmsat.report.diagnosis`, pure) and sections (:mod:`lmsat.report.content`:
tables and figures re-drawn from stored numbers) -> HTML (:mod:`lmsat.report.html`,
one self-contained file, figures embedded as base64 PNG, no network) or Markdown
(:mod:`lmsat.report.markdown`, figures as PNG files beside it). Every table is also
written as CSV in the companion folder ``<report stem>_files/``. No measurement is
recomputed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lmsat.errors import UserError
from lmsat.report.diagnosis import ModelDiagnosis, diagnose
from lmsat.kinds.verdict import VerdictRecord
from lmsat.store import Record, Store, atomic_write_csv, atomic_write_text, slugify

FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}


@dataclass
class ReportOutput:
    path: Path
    files: Path
    format: str
    diagnoses: list[ModelDiagnosis]
    summary: pd.DataFrame
    csv: list[Path]


def report_format(output: Path, markdown: bool) -> str:
    """'html' or 'markdown' from the output's suffix and --markdown; a UserError on a conflict."""
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot tell the report format from '{output.name}': name it *.html or *.md (or add --markdown with a .md name).")
    if markdown and fmt != "markdown":
        raise UserError(f"--markdown asks for Markdown but '{output.name}' ends in {output.suffix}; name it *.md.")
    return fmt


def check_run_dirs(run_dirs: list[Path]) -> None:
    """Each run directory exists and holds at least one record, before anything is written."""
    if not run_dirs:
        raise UserError("give at least one run directory (the --output folder of an lmsat command).")
    for rd in run_dirs:
        if not rd.exists():
            raise UserError(f"run directory '{rd}' does not exist; give the --output folder of an lmsat command.")
        if not rd.is_dir():
            raise UserError(f"'{rd}' is a file, not a run directory; give the --output folder of an lmsat command.")
        if not record_kinds(rd):
            raise UserError(f"'{rd}' holds no lmsat results (no <kind>/<key>.json records); run a measurement into it first, e.g. lmsat head MODEL -o {rd}.")


def record_kinds(run_dir: Path) -> list[str]:
    """The folders of a run directory that hold lmsat records.

    A run directory also holds folders of other JSON files (a tokenizer, model checkpoints,
    feature caches): a folder counts when one of its JSON files is an lmsat record of that
    kind (``"schema": "lmsat.<kind>/<version>"``).
    """
    kinds = []
    for folder in sorted(p for p in Path(run_dir).iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.json")):
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(raw, dict) and str(raw.get("schema", "")).startswith(f"lmsat.{folder.name}/"):
                kinds.append(folder.name)
                break
    return kinds


def load_records(run_dirs: list[Path]) -> dict[str, list[Record]]:
    """Every record of every kind in the run directories, kind -> records (run-dir order, then key)."""
    out: dict[str, list[Record]] = {}
    for rd in run_dirs:
        store = Store(rd, readonly=True)  # the report reads: a damaged record is skipped with a warning, never moved
        for kind in record_kinds(rd):
            try:
                out.setdefault(kind, []).extend(store.records(kind))
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
                raise UserError(f"a record in '{rd / kind}' is unreadable ({exc}); delete it and re-run the command that wrote it.") from exc
    return out


def build_report(run_dirs: list[str | os.PathLike[str]], output: str | os.PathLike[str], markdown: bool = False,
                 title: str = "lmsat report") -> ReportOutput:
    """Write the report (HTML or Markdown), its figures and its CSV tables; return where they are.

    Inputs are checked before anything is written; the report file itself is written
    atomically and last, so it is either complete or absent.
    """
    from lmsat.report.content import build_sections, diagnosis_frame, evidence_figure, seed_summary_section, summary_frame

    dirs = [Path(d) for d in run_dirs]
    out = Path(output)
    fmt = report_format(out, markdown)
    check_run_dirs(dirs)
    if out.is_dir():
        raise UserError(f"'{out}' is a folder; give a file name for the report, e.g. {out / 'report.html'}.")
    records = load_records(dirs)
    verdicts = records.pop("verdict", [])  # lmsat diagnose's verdict: rendered first, not as a table
    files = out.parent / f"{out.stem}_files"
    diags = diagnose(records)
    by_key = {(r.kind, r.key): r for recs in records.values() for r in recs}
    evidence = {}
    for m in diags:
        p = evidence_figure(m, by_key, records, files / f"evidence_{slugify(m.model)}.png")
        if p:
            evidence[m.model] = p
    sections = build_sections(records, diags, files)
    summary = summary_frame(diags)
    seeds = seed_summary_section(summary)
    if seeds is not None:  # seed groups first: mean ± sd over seeds before the per-run tables
        sections.insert(0, seeds)
    csv_paths = []
    tables = [("summary", summary), ("diagnosis", diagnosis_frame(diags))] + [(t.id, t.frame) for s in sections for t in s.tables]
    for name, frame in tables:
        if len(frame):
            path = files / f"{slugify(name)}.csv"
            atomic_write_csv(path, frame)
            csv_paths.append(path)
    meta = {"title": title, "run_dirs": [str(d) for d in dirs], "kinds": {k: len(v) for k, v in sorted(records.items())},
            "files": files.name, "verdicts": [VerdictRecord.from_record(v).results() for v in verdicts]}
    if fmt == "html":
        from lmsat.report.html import render_html

        text = render_html(meta, diags, evidence, sections, summary)
    else:
        from lmsat.report.markdown import render_markdown

        text = render_markdown(meta, diags, evidence, sections, summary, base=out.parent)
    atomic_write_text(out, text)
    return ReportOutput(out, files, fmt, diags, summary, csv_paths)


__all__ = ["build_report", "load_records", "diagnose", "ReportOutput"]
