"""The typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lmsat",
    help=(
        "lmsat: why does a small language model stop improving? Measurements of the study "
        "'Why do small language models underperform?' (Godey et al., arXiv 2404.07647): "
        "anisotropy, LM-head spectrum, checkpoint sweeps, rank-constrained heads, n-gram data dimension."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
