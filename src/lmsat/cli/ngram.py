"""`lmsat ngram-rank`: the inherent dimension of a tokenised corpus (study Fig. 7, docs/methods.md §9)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lmsat.cli.app import app
from lmsat.cli.ray_options import CpusPerTask, RayAddress, UseRay
from lmsat.cli.options import Data, DataConfig, Device, Force, Output, Split, Streaming, TextField, corpus_spec
from lmsat.cli.show import print_table, say

Tokenizer = Annotated[
    str,
    typer.Option(
        "--tokenizer",
        "-t",
        help="Hugging Face tokenizer id or folder (e.g. EleutherAI/pythia-70m, meta-llama/Llama-2-7b-hf), "
        "a .tiktoken BPE file, or a .gguf file (its vocabulary).",
        show_default=False,
    ),
]


@app.command("ngram-rank", rich_help_panel="Data dimension")
def ngram_rank(
    tokenizer: Tokenizer,
    data: Data,
    n: Annotated[int, typer.Option("--n", help="n-gram order: contexts are the previous n-1 tokens (the study: 5).")] = 5,
    min_count: Annotated[int, typer.Option("--min-count", help="Keep only contexts seen at least this many times.")] = 1,
    max_contexts: Annotated[
        Optional[int], typer.Option("--max-contexts", help="Keep at most this many contexts (see --context-selection); default all.")
    ] = None,
    context_selection: Annotated[
        str, typer.Option("--context-selection", help="With --max-contexts: 'frequent' (most frequent contexts) or 'random' (seeded subset).")
    ] = "frequent",
    seed: Annotated[int, typer.Option(help="Seed of the random context subset and of the iterative eigensolvers.")] = 0,
    row_weight: Annotated[
        str,
        typer.Option(
            "--row-weight",
            help="'uniform': each row is its context's next-token distribution (the study's); "
            "'frequency': rows also scaled by sqrt(context frequency).",
        ),
    ] = "uniform",
    top_k: Annotated[
        Optional[int],
        typer.Option(
            "--top-k",
            help="Compute only the k largest singular values (default: all, up to min(C, V); "
            "a block over --max-dense then gets its top 1024 only).",
        ),
    ] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Count only the first N tokens of the corpus.")] = None,
    method: Annotated[
        str,
        typer.Option(
            help="Spectrum: 'auto' (exact dense Gram per block up to --max-dense, else a top-k method), "
            "'dense', 'lanczos' (scipy ARPACK) or 'subspace' (randomized subspace iteration, torch)."
        ),
    ] = "auto",
    max_dense: Annotated[
        Optional[int],
        typer.Option(
            "--max-dense",
            help="Largest block (columns) whose Gram matrix is diagonalised densely "
            "(default: 20000 on CPU, ~3.2 GB and a few minutes; on a GPU the largest that fits in free memory).",
        ),
    ] = None,
    shard_tokens: Annotated[
        int,
        typer.Option(
            "--shard-tokens",
            help="Tokens counted at once (memory ~90 bytes/token); longer corpora are counted in shards and merged, "
            "spilling to disk past 60M distinct n-grams.",
        ),
    ] = 50_000_000,
    documents: Annotated[
        str,
        typer.Option(
            "--documents",
            help="What one document is (each closed by the end-of-text token): 'file' (a text file, or a "
            "JSONL/Parquet/hub row), 'blank-line' (paragraphs between blank lines) or 'line' (every line, "
            "newline dropped). The ~1 MB read blocks never split documents.",
        ),
    ] = "file",
    tokenizer_revision: Annotated[Optional[str], typer.Option("--tokenizer-revision", help="Hub revision of the tokenizer.")] = None,
    gguf_file: Annotated[
        Optional[str], typer.Option("--gguf-file", help="Name of a .gguf file inside the --tokenizer folder to take the vocabulary from.")
    ] = None,
    output: Output = "lmsat-runs",
    device: Device = "auto",
    text_field: TextField = "text",
    data_config: DataConfig = None,
    split: Split = "train",
    streaming: Streaming = True,
    force: Force = False,
    ray: UseRay = False,
    ray_address: RayAddress = None,
    cpus_per_task: CpusPerTask = 1.0,
) -> None:
    """Inherent dimension of a tokenised corpus: the n-gram next-token matrix P, its spectrum and W-error (study Fig. 7).

    Counts every n-gram of the corpus (documents joined by the end-of-text token), builds P with one row
    per observed (n-1)-token context holding its empirical next-token distribution, and computes the
    singular values of P with |P|_F exact, so W-error(d) = sqrt(sum_{i>d} s_i^2) / |P|_F, the smallest
    relative error of any rank-d linear head, is known for every computed d. Prints rows, counts, V and
    the dimension needed for W-error <= 0.5, 0.2, 0.1, 0.05, 0.01.

    Writes OUTPUT/ngram_counts/<key> (the counts: a re-run resumes after counting), OUTPUT/ngram/<key>
    (arrays singular_values, w_error), OUTPUT/ngram.csv and OUTPUT/figures/ngram_w_error.png (every
    ngram record of OUTPUT, one line each) and ngram_spectrum.png. Run it several times with the same
    OUTPUT for several corpora and tokenizers in one figure.
    """
    from lmsat.errors import UserError
    from lmsat.experiments.ngram import THRESHOLDS, NGramSettings, run_ngram
    from lmsat.figures.ngram import refresh_outputs
    from lmsat.loading.corpus import check_corpus
    from lmsat.loading.models import resolve_device
    from lmsat.loading.tokenizers import load_tokenizer

    from pathlib import Path

    from lmsat.cli import validate as v

    v.check_output_dir(output)
    v.check_seed("--seed", seed)
    if tokenizer_revision is not None and Path(tokenizer).expanduser().exists():
        raise UserError(
            f"--tokenizer-revision {tokenizer_revision} was given for the local tokenizer '{tokenizer}', but revisions "
            "exist only on the Hugging Face hub; drop it."
        )
    settings = NGramSettings(
        n=n,
        min_count=min_count,
        max_contexts=max_contexts,
        context_selection=context_selection,
        seed=seed,
        row_weight=row_weight,
        top_k=top_k,
        max_tokens=max_tokens,
        method=method,
        max_dense=max_dense,
        shard_tokens=shard_tokens,
        documents=documents,
    )
    settings.validate()
    resolved_device = resolve_device(device)
    corpus = corpus_spec(data, text_field, data_config, split, streaming)
    check_corpus(corpus)
    if not tokenizer.strip():
        raise UserError("--tokenizer is empty; give a Hugging Face tokenizer id or folder, a .tiktoken file or a .gguf file.")
    tok = load_tokenizer(tokenizer, revision=tokenizer_revision, gguf_file=gguf_file)

    from lmsat.experiments.ngram_ray import ray_counter  # --ray: shards and buckets as Ray tasks (docs/distributed.md)

    with ray_counter(ray or bool(ray_address), ray_address, settings, cpus_per_task) as counter:
        rec = run_ngram(corpus, tok, settings, output, device=resolved_device, force=force, counter=counter)
    r = rec.results
    say(
        f"[bold]{rec.key}[/bold]: {r['n_tokens']:,} tokens, {r['n_contexts']:,} contexts (rows, of "
        f"{r['n_contexts_observed']:,} observed), {r['n_ngrams']:,} distinct {settings.n}-grams, "
        f"V = {r['vocab_size']:,} ({r['observed_vocab']:,} observed as next tokens), |P|_F = {r['frobenius_norm']:.6g}"
    )
    acc = ", ".join(f"{k}={v:.2e}" for k, v in r["accuracy"].items() if isinstance(v, float))
    say(
        f"spectrum: {r['n_singular_values']:,} singular values ({'all non-zero' if r['complete'] else 'top values only'}), "
        f"method {r['method']} on {r['device']}, {r['spectrum_seconds']:.1f} s; accuracy: {acc or '-'}"
    )
    import pandas as pd

    def dim_row(t: float) -> dict[str, object]:
        est = (r.get("dims_estimate") or {}).get(str(t))
        if est is not None and est["how"] == "exact" and est["lo"] == est["hi"]:
            return {"W-error <=": t, "dimension d": f"{est['estimate']:,}", "interval": "exact"}
        if est is not None and est["estimate"] is not None:
            return {"W-error <=": t, "dimension d": f"{est['estimate']:,}", "interval": f"{est['lo']:,} to {est['hi']:,} ({est['how']})"}
        d = r["dims_for_w_error"][str(t)]
        if d is not None:
            return {"W-error <=": t, "dimension d": f"{d:,}", "interval": "exact"}
        lo, hi = (r.get("dims_bounds") or {}).get(str(t), (None, None))
        return {"W-error <=": t, "dimension d": "?", "interval": f"{lo:,} to {hi:,} (beyond the top {r['n_singular_values']:,})" if lo is not None else "-"}

    dims = pd.DataFrame([dim_row(t) for t in THRESHOLDS])
    print_table(dims, title="Dimension needed", floats=2)
    noise = r.get("noise")
    if noise:
        from lmsat.store import warn

        def dim(d: object) -> str:
            return f"{d:,}" if isinstance(d, int) else f"> {r['n_singular_values']:,}"

        lo_d, hi_d = r["noise_floor_dimension_range"]
        say(
            f"noise floor: W-error {noise['floor']:.3f} (range {noise['floor_low']:.3f}-{noise['floor_high']:.3f}), "
            f"reached at d = {dim(r['noise_floor_dimension'])} (range {dim(lo_d)}-{dim(hi_d)}): below it W-error(d) "
            "is within the sampling noise of the counts (docs/ngram.md, 'Sampling noise')"
        )
        if noise["one_hot_fraction"] > 0.5:
            warn(
                f"{100 * noise['one_hot_fraction']:.0f}% of the rows of P are one-hot ({100 * noise['singleton_fraction']:.0f}% of "
                "the kept contexts were seen once): most of |P|_F is sampling noise and small-threshold dims measure it; "
                "--min-count 2+, --row-weight frequency or more tokens lower the noise."
            )
    f1, f2 = refresh_outputs(output)["figures"]
    say(f"results: {output / 'ngram'}  table: {output / 'ngram.csv'}  figures: {f1}, {f2}")
