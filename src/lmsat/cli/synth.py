"""`lmsat synth` (synthetic languages of known rank) and `lmsat train` (small model families)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmsat.cli.app import app
from lmsat.cli.options import Data, DataConfig, Device, Output, Split, Streaming, TextField, corpus_spec
from lmsat.cli.ray_options import CpusPerTask, GpusPerTask, RayAddress, UseRay, grid_executor
from lmsat.cli.show import print_table, say

PANEL = "Ground truth"


@app.command(rich_help_panel=PANEL)
def synth(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the language to (corpus/, heldout/, tokenizer/, synth/, figures/).")],
    family: Annotated[str, typer.Option(help="low-rank-logits (logits U W^T of rank R, P = softmax) or low-rank-probs (P = mixture of R distributions, rank R).")] = "low-rank-logits",
    vocab: Annotated[int, typer.Option("--vocab", help="Vocabulary size V (words w0..w{V-1}; the tokenizer adds <eos> = id V).")] = 256,
    contexts: Annotated[int, typer.Option("--contexts", help="Number of context classes C (rows of the C x V matrix P); at most V^order.")] = 256,
    rank: Annotated[int, typer.Option("--rank", help="Rank R of the logits (low-rank-logits) or of P (low-rank-probs); 1 <= R <= min(C, V).")] = 32,
    order: Annotated[int, typer.Option("--order", help="k: the context of a token is set by the previous k tokens.")] = 1,
    temperature: Annotated[Optional[float], typer.Option(help="low-rank-logits only: logit entries have standard deviation 1/T (default 0.5).")] = None,
    concentration: Annotated[Optional[float], typer.Option(help="low-rank-probs only: Dirichlet parameter of the R base distributions (small = peaked; default 0.02).")] = None,
    mix_concentration: Annotated[Optional[float], typer.Option(help="low-rank-probs only: Dirichlet parameter of each context's mixture weights (default 0.1).")] = None,
    tokens: Annotated[int, typer.Option("--tokens", "-n", help="Training tokens to generate (rounded up to whole lines).")] = 2_000_000,
    heldout_tokens: Annotated[int, typer.Option(help="Held-out tokens, from an independent random stream.")] = 131_072,
    doc_tokens: Annotated[int, typer.Option(help="Words per line of the text files (layout only: each file is one chain that runs on across its lines).")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the matrices, the context map and the text.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a different language already written in OUTPUT.")] = False,
) -> None:
    """Write a synthetic language whose next-token distributions have a known rank and entropy.

    Contexts are set by the previous k tokens (an explicit random k-gram -> context table, or a
    hash when V^k is large); each chain starts from k virtual tokens w0. Writes OUTPUT/corpus/*.txt
    (training text; one chain per file, lines of --doc-tokens words), OUTPUT/heldout/*.txt,
    OUTPUT/tokenizer/ (a Hugging Face tokenizer: tokenising the text returns the generated ids),
    the truth record OUTPUT/synth/language.json (+ .npz: singular values of P and of the
    row-centred log P, per-context entropies; the matrices themselves when C x V <= 2^20) and
    OUTPUT/figures/true_spectra.png. Entropies are in nats/token: true_entropy is the mean
    -ln p_true over the generated training tokens (the best achievable loss on them),
    expected_entropy the exact expectation under the stationary context distribution.
    """
    from lmsat.errors import UserError
    from lmsat.experiments.synth import TextLayout, write_language
    from lmsat.figures.outputs import refresh_synth
    from lmsat.kinds.synth import SynthRecord, truth_table
    from lmsat.synth.generator import LanguageSpec

    from lmsat.cli import validate as v

    v.check_output_dir(output)
    v.check_seed("--seed", seed)
    v.check_range("--tokens", tokens, 1)
    v.check_range("--heldout-tokens", heldout_tokens, 1)
    v.check_range("--doc-tokens", doc_tokens, 1)
    if family == "low-rank-logits" and (concentration is not None or mix_concentration is not None):
        raise UserError("--concentration and --mix-concentration apply to --family low-rank-probs; use --temperature for low-rank-logits.")
    if family == "low-rank-probs" and temperature is not None:
        raise UserError("--temperature applies to --family low-rank-logits; use --concentration / --mix-concentration for low-rank-probs.")
    defaults = LanguageSpec()
    spec = LanguageSpec(
        family=family, vocab=vocab, contexts=contexts, rank=rank, order=order,
        temperature=defaults.temperature if temperature is None else temperature,
        concentration=defaults.concentration if concentration is None else concentration,
        mix_concentration=defaults.mix_concentration if mix_concentration is None else mix_concentration,
        seed=seed,
    )
    record = write_language(spec, output, n_tokens=tokens, heldout_tokens=heldout_tokens,
                            layout=TextLayout(doc_tokens=doc_tokens), force=force)
    outputs = refresh_synth(output)
    print_table(truth_table(SynthRecord.from_record(record)), title=f"Synthetic language in {output}")
    say(f"truth: {record.path}  table: {outputs.csv}  figure: {', '.join(str(f) for f in outputs.figures)}")
    say(f"next: lmsat train --data {output / 'corpus'} --tokenizer {output / 'tokenizer'} -o RUN_DIR")


@app.command(rich_help_panel=PANEL)
def train(
    data: Data,
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="Hugging Face tokenizer folder or id (e.g. the tokenizer/ written by lmsat synth).", show_default=False)],
    output: Output = Path("lmsat-train"),
    hidden_sizes: Annotated[str, typer.Option("--hidden-sizes", help="Comma-separated hidden sizes d, one model each.")] = "16,32,64,128",
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads (must divide every hidden size).")] = 4,
    arch: Annotated[str, typer.Option(help="gpt-neox (Pythia-like) or llama; both with an untied LM head.")] = "gpt-neox",
    seq_len: Annotated[int, typer.Option("--seq-len", help="Context length: tokens per training sequence.")] = 64,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Sequences per optimizer step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    min_lr_ratio: Annotated[float, typer.Option(help="Final learning rate as a fraction of --lr (cosine decay).")] = 0.1,
    warmup: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 100,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (matrices only).")] = 0.01,
    grad_clip: Annotated[float, typer.Option(help="Clip the global gradient L2 norm to this.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and of the batch order.")] = 0,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Train every hidden size once per seed, e.g. 0,1,2 or 0-4 (models named ...-seed<N> for N != 0); replaces --seed.", show_default=False)] = None,
    data_seed: Annotated[Optional[int], typer.Option("--data-seed", help="Seed of the batch order alone (default: the seed); the weights keep theirs.", show_default=False)] = None,
    weight_seed: Annotated[Optional[int], typer.Option("--weight-seed", help="Seed of the initial weights alone (default: the seed); the batch order keeps its.", show_default=False)] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoints at step0, 1, 2, 4, ... below N, then every N steps and the last step.")] = 100,
    eval_data: Annotated[Optional[str], typer.Option("--eval-data", help="Held-out corpus (default: the heldout/ folder next to a corpus written by lmsat synth, else the last --eval-tokens of --data, not trained on).")] = None,
    eval_tokens: Annotated[int, typer.Option(help="Held-out tokens evaluated at each checkpoint.")] = 16384,
    max_tokens: Annotated[Optional[int], typer.Option(help="Read only the first N tokens of --data (default: all of it, held in memory).")] = None,
    log_every: Annotated[int, typer.Option(help="Log the mean training loss every N steps.")] = 10,
    head_init: Annotated[str, typer.Option("--head-init", help="default (the architecture's initialisation) or random: the softmax head starts as a random full-rank matrix with equal singular values (same Frobenius norm).")] = "default",
    freeze_head: Annotated[bool, typer.Option("--freeze-head", help="Keep the LM head fixed at its initial weights (with --head-init random: a frozen random full-rank head).")] = False,
    head_spectral_reg: Annotated[float, typer.Option("--head-spectral-reg", help="lambda >= 0: minimise loss + lambda * (1 - H(s^2/sum s^2) / ln min(V, d)) over the head's singular values s, keeping its effective rank up.")] = 0.0,
    head: Annotated[str, typer.Option("--head", help="LM head: softmax (a linear map, the default), mos:K (mixture of K softmaxes, Yang et al. 2018), sigsoftmax (Kanai et al. 2018) or mlp (non-linear projection before the softmax). Models other than softmax are named ...-<head> (e.g. -mos4); their checkpoints keep the head's own parameters, which lmsat train resumes from.")] = "softmax",
    device: Device = "auto",
    text_field: TextField = "text",
    data_config: DataConfig = None,
    split: Split = "train",
    streaming: Streaming = True,
    force: Annotated[bool, typer.Option("--force", help="Delete the models of OUTPUT with these hidden sizes and retrain them from scratch.")] = False,
    ray: UseRay = False,
    ray_address: RayAddress = None,
    gpus_per_task: GpusPerTask = None,
    cpus_per_task: CpusPerTask = 1.0,
) -> None:
    """Train a family of small causal LMs (one per hidden size, and per seed with --seeds) with Pythia-like checkpoints.

    AdamW with warm-up and cosine decay, gradient clipping, bf16 autocast on CUDA. Writes
    OUTPUT/<arch>-d<d>-l<layers>/step<N>/ (Hugging Face folders that `lmsat sweep`, `head`,
    `anisotropy` and AutoModelForCausalLM.from_pretrained read), metrics.jsonl (training loss;
    held-out loss, head spectrum and last-layer anisotropy at each checkpoint), train_config.json
    (tokens_per_step, n_params, settings), a `train` record per model in OUTPUT/train/,
    OUTPUT/training.csv and figures. Re-running the same command resumes an interrupted model from
    its newest checkpoint and skips finished ones. On a language from `lmsat synth` the gap to
    its true entropy is measured on the same held-out tokens.
    """
    from lmsat.figures.outputs import refresh_train
    from lmsat.kinds.train import TrainRecord, summary_table
    from lmsat.cli.parse import parse_hidden_sizes, parse_seeds
    from lmsat.training.train import TrainConfig, train_family

    from lmsat.cli import validate as v

    v.check_output_dir(output)
    v.check_seed("--seed", seed)
    v.check_device(device)
    from lmsat.errors import UserError

    seed_list = parse_seeds(seeds)
    if seed_list is not None and seed != 0:
        raise UserError("give either --seed or --seeds, not both (e.g. --seeds 0,1,2).")
    sizes = parse_hidden_sizes(hidden_sizes)
    config = TrainConfig(
        hidden_size=sizes[0], layers=layers, heads=heads, arch=arch, seq_len=seq_len, steps=steps, batch_size=batch_size,
        lr=lr, min_lr_ratio=min_lr_ratio, warmup=warmup, weight_decay=weight_decay, grad_clip=grad_clip, seed=seed,
        data_seed=data_seed, weight_seed=weight_seed, checkpoint_every=checkpoint_every, eval_tokens=eval_tokens, max_tokens=max_tokens, log_every=log_every, head=head, head_init=head_init, freeze_head=freeze_head,
        head_spectral_reg=head_spectral_reg, device=device,
    )
    corpus = corpus_spec(data, text_field, data_config, split, streaming)
    eval_corpus = corpus_spec(eval_data, text_field, data_config, split, streaming) if eval_data else None
    with grid_executor(ray, ray_address, device, gpus_per_task, cpus_per_task, "train") as (executor, resources):
        records = train_family(corpus, tokenizer, output, sizes, config, eval_data=eval_corpus, force=force, seeds=seed_list,
                               executor=executor, resources=resources)  # --ray: one task per model (docs/distributed.md)
    outputs = refresh_train(output)
    shown = summary_table([TrainRecord.from_record(r) for r in records])
    print_table(shown, title="Trained models (losses in nats/token)", floats=3)
    say(f"checkpoints: {output}/<model>/step<N>  table: {outputs.csv}  figures: {', '.join(str(f) for f in outputs.figures)}")
