"""`lmsat rank-probe`: rank-constrained heads on frozen representations (study Fig. 6, 8, 9)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lmsat.cli.app import app
from lmsat.cli.options import (
    BatchSize,
    Data,
    DataConfig,
    Device,
    Dtype,
    Force,
    GgufFile,
    Models,
    Output,
    Revision,
    SeqLen,
    Split,
    Streaming,
    TextField,
    TrustRemoteCode,
    corpus_spec,
    model_specs,
)
from lmsat.cli.ray_options import CpusPerTask, GpusPerTask, RayAddress, UseRay, grid_executor
from lmsat.cli.show import print_table, say

_PANEL = "Softmax bottleneck"


@app.command("rank-probe", rich_help_panel=_PANEL)
def rank_probe(
    models: Models,
    data: Data,
    ranks: Annotated[
        Optional[str],
        typer.Option(help="Comma-separated ranks r of the heads W = A B, each in [1, d] (default: 8, 16, 32, ... below d)."),
    ] = None,
    output: Output = "lmsat-runs",
    train_tokens: Annotated[int, typer.Option("--train-tokens", help="Tokens of the training sample (whole windows; cached once).")] = 24576,
    eval_tokens: Annotated[int, typer.Option("--eval-tokens", help="Tokens of the held-out sample, disjoint from the training one.")] = 2048,
    lr_grid: Annotated[
        str, typer.Option("--lr-grid", help="Peak learning rates searched per rank (the study searched [1e-3, 5e-2]); one value skips the search. auto: 1e-3,3e-3,1e-2,3e-2 for --init gaussian; 1e-5,3e-5,1e-4,3e-4 for --init svd, whose search also keeps the untrained truncation (rate 0) as a candidate.")
    ] = "auto",
    search_steps: Annotated[int, typer.Option("--search-steps", help="Optimizer steps of each learning-rate search run.")] = 10,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps of the full run at the chosen learning rate.")] = 90,
    batch_tokens: Annotated[int, typer.Option("--batch-tokens", help="Tokens per optimizer step (rounded to whole windows).")] = 256,
    warmup: Annotated[float, typer.Option("--warmup", help="Fraction of steps of linear warm-up before the cosine decay.")] = 0.05,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW decoupled weight decay.")] = 0.01,
    full_rank: Annotated[bool, typer.Option("--full-rank/--no-full-rank", help="Also train the unconstrained (rank min(V, d)) reference head.")] = True,
    full_rank_head: Annotated[
        str, typer.Option("--full-rank-head", help="Reference head: factorized (A B with r = min(V, d), the probes' own form) or plain (one V x d matrix W).")
    ] = "factorized",
    head: Annotated[str, typer.Option("--head", help="Head on top of the rank-r map W = A B: softmax, mos:K (mixture of K softmaxes, Yang et al. 2018), sigsoftmax (Kanai et al. 2018) or mlp (non-linear projection before the softmax).")] = "softmax",
    init: Annotated[str, typer.Option("--init", help="svd: start A, B from the SVD of the model's own head (A B = its best rank-r approximation; at r = d the own head itself); gaussian: the study's N(0, 1) recipe, rescaled so logits start O(1).")] = "svd",
    feature_dtype: Annotated[str, typer.Option("--feature-dtype", help="Storage dtype of the cached representations: float16 or float32.")] = "float16",
    chunk_tokens: Annotated[int, typer.Option("--chunk-tokens", help="Tokens per logits chunk (memory = chunk x V floats); 0 = about 64 MB of logits on CPU, 512 MB on CUDA.")] = 0,
    seq_len: SeqLen = 128,
    seed: Annotated[int, typer.Option(help="Seed of the token sample, the split, the initialisation and the batch order.")] = 0,
    batch_size: BatchSize = 8,
    revision: Revision = None,
    gguf_file: GgufFile = None,
    dtype: Dtype = "float32",
    device: Device = "auto",
    text_field: TextField = "text",
    data_config: DataConfig = None,
    split: Split = "train",
    streaming: Streaming = True,
    trust_remote_code: TrustRemoteCode = False,
    force: Force = False,
    ray: UseRay = False,
    ray_address: RayAddress = None,
    gpus_per_task: GpusPerTask = None,
    cpus_per_task: CpusPerTask = 1.0,
) -> None:
    """Train heads of rank r on the model's frozen final representations; loss, accuracy and W-error per rank.

    The final pre-head representations (exactly what the LM head sees) and next
    tokens of a training and a disjoint held-out sample are computed once and cached
    in OUTPUT/features/<hash>/ (memory-mapped, checksummed). Per rank r, a head
    W = A B (A: V x r, B: r x d; by default started from the SVD of the model's own head,
    whose truncation loss is the "step 0" column) is trained with AdamW, warm-up and cosine decay:
    a short run per --lr-grid rate (chosen on a development slice of the training
    sample), then --steps at the best rate; held-out loss (nats/token), perplexity
    and top-1 accuracy are reported next to W-error(r) of the model's own head.
    Reference rows: a trained full-rank head and the model's own head.

    Writes OUTPUT/rank_probe/*.json (one record per (rank, learning rate) run; a
    re-run continues), OUTPUT/rank_probe_ref/*.json, OUTPUT/rank_probe.csv and
    figures rank_probe_loss.png (Fig. 6), rank_probe_w_error.png (Fig. 8),
    rank_probe_lr.png (Fig. 9). With --ray every (rank, learning rate) run is one Ray task
    (searches first, then each rank's final run; this process writes every record, and the
    tasks read the feature cache, so OUTPUT must be on a path every node sees); the records
    equal a local run's. Training uses bf16 autocast on CUDA. Warns when the chosen
    learning rate is at the edge of --lr-grid, and when the full-rank probe ends worse than
    the model's own head by more than its standard error.
    """
    from lmsat.cli.parse import parse_floats, parse_ranks
    from lmsat.experiments.rank_probe import ProbeSettings, run_rank_probe
    from lmsat.figures.rank_probe import refresh_outputs
    from lmsat.figures.style import model_label
    from lmsat.kinds.rank_probe import display_table

    from lmsat.cli import validate as v

    v.check_output_dir(output)
    v.check_range("--seq-len", seq_len, 2)
    v.check_seed("--seed", seed)
    v.check_range("--batch-size", batch_size, 1)
    v.check_range("--train-tokens", train_tokens, 1)
    v.check_range("--eval-tokens", eval_tokens, 1)
    v.check_range("--steps", steps, 1)
    v.check_range("--search-steps", search_steps, 0)
    v.check_range("--batch-tokens", batch_tokens, 1)
    v.check_range("--warmup", warmup, 0, 1, inclusive="left")
    v.check_range("--weight-decay", weight_decay, 0)
    v.check_range("--chunk-tokens", chunk_tokens, 0, hint="0 = automatic")
    v.check_dtype(dtype)
    v.check_device(device)
    settings = ProbeSettings(
        train_tokens=train_tokens,
        eval_tokens=eval_tokens,
        seq_len=seq_len,
        seed=seed,
        lr_grid=() if lr_grid.strip() == "auto" else parse_floats(lr_grid, "--lr-grid"),
        search_steps=search_steps,
        steps=steps,
        batch_tokens=batch_tokens,
        warmup_frac=warmup,
        weight_decay=weight_decay,
        feature_dtype=feature_dtype,
        forward_batch=batch_size,
        chunk_tokens=chunk_tokens,
        full_rank=full_rank,
        full_rank_head=full_rank_head,
        head=head,
        init=init,
    )
    rank_list = parse_ranks(ranks) if ranks is not None else None
    settings.validate()
    specs = model_specs(models, revision, gguf_file, dtype, device, trust_remote_code)
    v.check_seq_len_fits(specs, seq_len)
    corpus = corpus_spec(data, text_field, data_config, split, streaming)
    with grid_executor(ray, ray_address, device, gpus_per_task, cpus_per_task, "rank-probe") as (executor, resources):
        run_rank_probe(specs, corpus, output, rank_list, settings, force=force, executor=executor, resources=resources)

    outputs = refresh_outputs(output)
    f6, f8, f9 = outputs["figures"]
    shown = display_table(outputs["frame"], model_label)
    print_table(shown, title="Rank probe: held-out loss (nats/token), perplexity, top-1", floats=4)
    say(f"results: {output / 'rank_probe'}  table: {output / 'rank_probe.csv'}  figures: {f6}, {f8}, {f9}")
