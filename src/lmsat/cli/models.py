"""`lmsat anisotropy` and `lmsat head`."""

from __future__ import annotations

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
    Seed,
    SeqLen,
    Split,
    Streaming,
    TextField,
    Tokens,
    TrustRemoteCode,
    corpus_spec,
    model_specs,
)
from lmsat.cli.show import print_table, print_transposed, say


@app.command(rich_help_panel="Measure a model")
def anisotropy(
    models: Models,
    data: Data,
    output: Output = "lmsat-runs",
    revision: Revision = None,
    gguf_file: GgufFile = None,
    dtype: Dtype = "float32",
    device: Device = "auto",
    tokens: Tokens = 8192,
    seq_len: SeqLen = 256,
    seed: Seed = 0,
    batch_size: BatchSize = 8,
    text_field: TextField = "text",
    data_config: DataConfig = None,
    split: Split = "train",
    streaming: Streaming = True,
    trust_remote_code: TrustRemoteCode = False,
    force: Force = False,
) -> None:
    """Layer-wise anisotropy (mean cosine similarity of hidden states) on a token sample (study Fig. 2).

    Writes OUTPUT/anisotropy/<model>.json (one record per model), OUTPUT/anisotropy.csv
    (model, layer, depth in [0,1], anisotropy, mean norm) and OUTPUT/figures/anisotropy.png.
    Encoders (e.g. BERT) work too; their layers are measured the same way.
    """
    from lmsat.experiments.anisotropy import run_anisotropy
    from lmsat.figures.outputs import refresh_anisotropy

    from lmsat.cli import validate as v

    v.check_output_dir(output)
    v.check_range("--tokens", tokens, 1)
    v.check_range("--seq-len", seq_len, 2)
    v.check_seed("--seed", seed)
    v.check_range("--batch-size", batch_size, 1)
    v.check_dtype(dtype)
    v.check_device(device)
    specs = model_specs(models, revision, gguf_file, dtype, device, trust_remote_code)
    v.check_seq_len_fits(specs, seq_len)
    corpus = corpus_spec(data, text_field, data_config, split, streaming)
    run_anisotropy(specs, corpus, output, n_tokens=tokens, seq_len=seq_len, seed=seed, batch_size=batch_size, force=force)
    outputs = refresh_anisotropy(output)
    table, fig = outputs.frame, outputs.figures[0]
    for model_label_, rows in table.groupby(table["model"] + table["revision"].map(lambda r: f"@{r}" if r else ""), sort=False):
        print_table(rows[["layer", "depth", "anisotropy", "mean_norm"]], title=f"Anisotropy by layer: {model_label_}", floats=4)
    say(f"results: {output / 'anisotropy'}  table: {output / 'anisotropy.csv'}  figure: {fig}")


@app.command(rich_help_panel="Measure a model")
def head(
    models: Models,
    output: Output = "lmsat-runs",
    revision: Revision = None,
    gguf_file: GgufFile = None,
    dtype: Dtype = "float32",
    device: Device = "auto",
    trust_remote_code: TrustRemoteCode = False,
    force: Force = False,
) -> None:
    """Singular spectrum of the LM head W (V x d): singular entropy, effective rank, W-error (study Fig. 4-5).

    Prints singular entropy KL(p || uniform) for p = s^2/sum s^2 (default) and p = s/sum s,
    effective rank exp(H(p)), and W-error at d/8, d/4, d/2. Saves all singular values
    (OUTPUT/head/<model>.npz), OUTPUT/head.csv and figures head_spectrum.png, head_w_error.png.
    """
    from lmsat.experiments.head import run_head
    from lmsat.figures.outputs import refresh_head

    from lmsat.cli import validate as v

    v.check_output_dir(output)
    v.check_dtype(dtype)
    v.check_device(device)
    specs = model_specs(models, revision, gguf_file, dtype, device, trust_remote_code)
    run_head(specs, output, force=force)
    outputs = refresh_head(output)
    table, (f1, f2) = outputs.frame, outputs.figures
    print_transposed(
        table,
        label_columns=["model", "revision"],
        rows={
            "hidden size d": "hidden_size",
            "tied to input embedding": "tied",
            "singular entropy, p = s^2/sum s^2 (nats)": "singular_entropy",
            "singular entropy, p = s/sum s (nats)": "singular_entropy_linear",
            "max possible = ln d": "max_singular_entropy",
            "effective rank exp(H), p = s^2": "effective_rank",
            "effective rank exp(H), p = s": "effective_rank_linear",
            "W-error(d/8)": "w_error_d8",
            "W-error(d/4)": "w_error_d4",
            "W-error(d/2)": "w_error_d2",
        },
        title="LM head spectrum",
    )
    say(f"results: {output / 'head'}  table: {output / 'head.csv'}  figures: {f1}, {f2}")
