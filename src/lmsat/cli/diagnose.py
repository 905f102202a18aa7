"""`lmsat diagnose MODEL --data CORPUS`: one command for "is my model's softmax head what limits it on my data?"."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmsat.cli.app import app
from lmsat.cli.options import DataConfig, Device, Dtype, GgufFile, Revision, Split, Streaming, TextField, TrustRemoteCode
from lmsat.cli.show import say


@app.command(rich_help_panel="Measure a model")
def diagnose(
    model: Annotated[str, typer.Argument(help="Hub id (NAME@REVISION), local folder, .gguf file, or a folder of stepN checkpoints.", show_default=False)],
    data: Annotated[str, typer.Option("--data", "-d", help="Corpus: text/JSONL/Parquet file, folder, quoted glob, or hf:DATASET.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run folder (default: lmsat-runs/diagnose-<model>); re-run to continue.")] = None,
    budget: Annotated[str, typer.Option(help="quick | standard | study: tokens and probe steps of every stage (costs in docs/report.md).")] = "quick",
    revision: Revision = None,
    revisions: Annotated[Optional[str], typer.Option(help="Hub revisions of a checkpoint series (e.g. all, or step1000,step2000): adds the saturation view.")] = None,
    gguf_file: GgufFile = None,
    dtype: Dtype = "float32",
    device: Device = "auto",
    text_field: TextField = "text",
    data_config: DataConfig = None,
    split: Split = "train",
    streaming: Streaming = True,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Is the model's hidden size d binding on this data? Runs every measurement, then writes a report with the verdict.

    Stages (each resumable; results are ordinary records in the run folder): the LM head's spectrum; anisotropy per layer; the corpus's n-gram dimension with the model's own tokenizer; a rank probe at d/2, d/4 (more with larger budgets) and at r = d on the frozen model, which also measures the model's own loss on the same held-out tokens; for a folder of stepN checkpoints (or --revisions) a sweep of every checkpoint and the saturation analysis. The verdict says whether d is binding and why, names every assumption, and recommends a head size with the loss the probe measured.

    Budgets (SmolLM2-135M on Brown; measured costs in docs/report.md): quick, the default, is sized for 2 CPU cores; standard keeps more contexts, ranks and probe steps (17 min measured on 2 CPU cores at load ~3, docs/report.md; minutes on a GPU); study uses the study's sample sizes, for a GPU.

    Example: lmsat diagnose ~/.cache/lmsat/smollm2-hf --data ~/.cache/lmsat/brown (writes lmsat-runs/diagnose-smollm2-hf/report.html).
    """
    from lmsat.cli import validate
    from lmsat.pipelines.diagnose import default_output, run_diagnose

    output = output if output is not None else default_output(model)
    validate.check_output_dir(output)  # the default folder too: an unwritable working directory is one line
    result = run_diagnose(model, data, output, budget=budget, revision=revision, revisions=revisions, gguf_file=gguf_file, dtype=dtype,
                          device=device, trust_remote_code=trust_remote_code, text_field=text_field, data_config=data_config,
                          split=split, streaming=streaming, say=say)
    v = result.verdict
    say(f"verdict: d = {v['hidden_size']} is {v['status'].upper()}")
    say(v["reason"])
    say(f"recommendation: {v['recommendation']}")
    say(f"report: {result.report}")
