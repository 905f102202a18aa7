"""`lmsat report` (one readable document from run directories) and `lmsat demo` (from nothing to a report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmsat.cli.app import app
from lmsat.cli.show import print_table, say


@app.command(rich_help_panel="Report")
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (the --output folders of lmsat commands) to report on.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Report file: *.html (one self-contained file) or *.md (Markdown).")] = Path("report.html"),
    markdown: Annotated[bool, typer.Option("--markdown", help="Write Markdown (the output name must end in .md).")] = False,
    title: Annotated[str, typer.Option(help="Title at the top of the report.")] = "lmsat report",
) -> None:
    """Build one report from stored results: a per-model diagnosis with its evidence, then every measurement found.

    Reads every record in the run directories (anisotropy, head, sweep, saturation, scaling_fit,
    rank_probe, rank_probe_ref, ngram, synth, train, downstream; any other kind as a plain table)
    and never recomputes a measurement. The diagnosis compares each model's hidden size d with the
    data's n-gram dimension at W-error 0.5 and 0.1 and a synthetic language's known rank, and reports
    the head's singular entropy, last-layer anisotropy, the spectrum-collapse and anisotropy-jump
    steps of a sweep, and the rank-probe gap at r = d, each with numbers, a figure and caveats.

    HTML embeds its figures (base64 PNG) and needs no network. Markdown links its figures as PNG
    files. Either way, OUTPUT_files/ next to the report holds the figures and every table as CSV.
    """
    from lmsat.report import build_report

    result = build_report(run_dirs, output, markdown=markdown, title=title)
    if len(result.summary):
        print_table(result.summary, title="Diagnosis", floats=3)
    say(f"report: {result.path}  figures and CSV tables: {result.files}")
