"""Options shared by several commands, so every command spells them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmsat.loading.corpus import CorpusSpec
from lmsat.loading.models import ModelSpec, parse_model_arg

Models = Annotated[
    list[str],
    typer.Argument(help="Hugging Face ids, local folders or .gguf files; NAME@REVISION picks a revision (e.g. EleutherAI/pythia-160m@step100000).", show_default=False),
]
Output = Annotated[Path, typer.Option("--output", "-o", help="Run directory for results, tables and figures.")]
Revision = Annotated[Optional[str], typer.Option(help="Revision (branch, tag or commit) for models given without @REVISION.")]
GgufFile = Annotated[Optional[str], typer.Option("--gguf-file", help="Name of a .gguf file inside each model folder (or give the .gguf path as MODEL).")]
Dtype = Annotated[str, typer.Option(help="Weights dtype: float32, bfloat16 or float16.")]
Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model repository's own Python code (off unless you ask).")]
Data = Annotated[str, typer.Option("--data", "-d", help="Corpus: text/JSONL/Parquet file, folder, quoted glob, or hf:DATASET.", show_default=False)]
TextField = Annotated[str, typer.Option(help="Field/column holding the text in JSONL, Parquet and hub datasets.")]
DataConfig = Annotated[Optional[str], typer.Option(help="Hub dataset configuration (e.g. wikitext-103-raw-v1).")]
Split = Annotated[str, typer.Option(help="Hub dataset split.")]
Streaming = Annotated[bool, typer.Option("--streaming/--no-streaming", help="Stream a hub dataset instead of downloading it whole.")]
Tokens = Annotated[int, typer.Option("--tokens", "-n", help="Number of tokens in the sample (rounded up to whole sequences).")]
SeqLen = Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")]
Seed = Annotated[int, typer.Option(help="Seed of the token sample.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Sequences per forward pass.")]
Force = Annotated[bool, typer.Option("--force", help="Recompute results already in the run directory.")]


def model_specs(models: list[str], revision: str | None, gguf_file: str | None, dtype: str, device: str, trust_remote_code: bool) -> list[ModelSpec]:
    return [
        parse_model_arg(m, revision, gguf_file=gguf_file, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        for m in models
    ]


def corpus_spec(data: str, text_field: str, data_config: str | None, split: str, streaming: bool) -> CorpusSpec:
    return CorpusSpec(source=data, text_field=text_field, config=data_config, split=split, streaming=streaming)
