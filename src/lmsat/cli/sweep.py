"""`lmsat sweep`, `lmsat saturation`, `lmsat scaling-fit`: checkpoints over training (study Fig. 1, 3, 4, 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lmsat.cli.app import app
from lmsat.cli.ray_options import CpusPerTask, GpusPerTask, RayAddress, UseRay
from lmsat.cli.options import BatchSize, Data, DataConfig, Device, Dtype, Output, Seed, Split, Streaming, TextField, TrustRemoteCode
from lmsat.cli.parse import parse_named_ints
from lmsat.cli.show import print_table, say
from lmsat.errors import UserError
from lmsat.loading.checkpoints import short_name

PANEL = "Checkpoints over training"

SweepModels = Annotated[
    Optional[list[str]],
    typer.Argument(
        help="Local checkpoint folders (a folder of stepN/checkpoint-N folders, or a folder of such model folders) "
        "and/or Hugging Face ids; optional with --suite.",
        show_default=False,
    ),
]
RunDir = Annotated[Path, typer.Argument(help="Run directory written by `lmsat sweep -o RUN_DIR`.", show_default=False)]
NamedInts = Annotated[Optional[list[str]], typer.Option(show_default=False)]


def _split_names(values: list[str] | None) -> list[str]:
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def _analyse(output: Path, max_rise: float, min_entropy_rise: float, min_anisotropy_rise: float, from_step: int,
             fit_models: list[str] | None, params: dict[str, int], tokens_per_step: dict[str, int], need_fit: bool) -> None:
    """Saturation table, scaling fit (best effort unless ``need_fit``), the five figures; print the tables."""
    from lmsat.experiments.saturation import run_saturation
    from lmsat.experiments.scaling import FIT_KEY, KIND as FIT_KIND, run_scaling_fit
    from lmsat.figures.outputs import refresh_sweep
    from lmsat.kinds.scaling_fit import ScalingFitRecord
    from lmsat.store import Store

    table, frame = run_saturation(output, max_rise, min_entropy_rise, min_anisotropy_rise, from_step)
    _show(table, SATURATION_VIEW, "Saturation per model (rise = final/best - 1)")
    fit_summary: dict[str, Any] | None = None
    try:
        _, fit_table, fit_summary = run_scaling_fit(output, fit_models, params, tokens_per_step, max_rise)
    except UserError as exc:
        if need_fit:
            raise
        say(f"scaling-law fit skipped: {exc}")
        stored = Store(output).get(FIT_KIND, FIT_KEY)
        fit_summary = ScalingFitRecord.from_record(stored).results() if stored else None
    else:
        _show(fit_table, FIT_VIEW, "Scaling-law extrapolation (under = L_obs / L_pred - 1)")
        say(
            f"fit on {', '.join(short_name(m) for m in fit_summary['fitted_models'])}: A = {fit_summary['A']:.4g}, alpha = {fit_summary['alpha']:.4f} "
            f"(E = {fit_summary['E']}, B = {fit_summary['B']}, beta = {fit_summary['beta']} fixed; study: A = 119.09, alpha = 0.246); "
            f"mean underperformance over {fit_summary['mean_over']}: final {_pct(fit_summary['mean_final_underperformance'])}, "
            f"best {_pct(fit_summary['mean_best_underperformance'])}"
        )
        for note in fit_summary["notes"]:
            say(f"note: {note}")
    figures = refresh_sweep(output, fit_summary).figures
    say(f"tables: {output / 'sweep.csv'}, {output / 'saturation.csv'}"
        + (f", {output / 'scaling_fit.csv'}" if (output / "scaling_fit.csv").exists() else "")
        + f"  figures: {', '.join(str(p) for p in figures)}")


SATURATION_VIEW = {
    "name": "model", "n_checkpoints": "ckpts", "n_failed": "failed", "n_duplicates": "dup", "best_step": "best step",
    "best_loss": "best loss", "final_step": "final step", "final_loss": "final loss", "relative_rise": "rise",
    "collapse_step": "collapse", "anisotropy_jump_step": "aniso jump",
}
FIT_VIEW = {
    "name": "model", "in_fit": "fit", "final_loss": "final loss", "final_predicted": "law", "final_underperformance": "final under",
    "best_loss": "best loss", "best_predicted": "law@best", "best_underperformance": "best under",
}


def _show(table: Any, view: dict[str, str], title: str) -> None:
    """Print the main columns of a table under short headers (the CSV has every column)."""
    cols = [c for c in view if c in table]
    print_table(table[cols].rename(columns=view), title=title, floats=4)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


MaxRise = Annotated[float, typer.Option("--max-rise", help="A model saturates when final/best - 1 exceeds this (0.01 = 1%).")]
MinEntropyRise = Annotated[float, typer.Option("--min-entropy-rise", help="Smallest singular-entropy rise (nats) that counts as a spectrum collapse.")]
MinAnisotropyRise = Annotated[float, typer.Option("--min-anisotropy-rise", help="Smallest last-layer anisotropy rise that counts as a jump.")]
FromStep = Annotated[int, typer.Option("--from-step", help="Ignore checkpoints before this step when looking for jumps (e.g. 1000 to skip Pythia's warm-up).")]
FitModels = Annotated[Optional[list[str]], typer.Option("--models", help="Models to fit the law on (short or full names, comma-separated or repeated); default: those that do not saturate.", show_default=False)]
Params = Annotated[Optional[list[str]], typer.Option("--params", help="Parameter count N per model, as MODEL=N (repeat), or N for all; default: counted from the weights or train_config.json.", show_default=False)]
TokensPerStep = Annotated[Optional[list[str]], typer.Option("--tokens-per-step", help="Tokens per training step, as MODEL=N (repeat) or N for all; default: train_config.json, or 2,097,152 for Pythia.", show_default=False)]


@app.command(rich_help_panel=PANEL)
def sweep(
    models: SweepModels = None,
    data: Data = ...,  # type: ignore[assignment]
    output: Output = Path("lmsat-runs"),
    suite: Annotated[Optional[str], typer.Option(help="Model suite: pythia, pythia-deduped (EleutherAI/pythia-<size>[-deduped]) or polypythias (EleutherAI/pythia-<size>-seed<N>, with --seeds).", show_default=False)] = None,
    sizes: Annotated[Optional[str], typer.Option(help="Suite sizes, comma-separated: 14m,31m,70m,160m,410m,1b,1.4b,2.8b,6.9b,12b (default: all; polypythias: 14m..410m).", show_default=False)] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="PolyPythias seeds (--suite polypythias): 1-9, or a list such as 0,1,2; 0 is the original Pythia run. Each record stores its seed.", show_default=False)] = None,
    revisions: Annotated[str, typer.Option("--revisions", "-r", help="Checkpoints: all (Pythia: the 154 published steps), log (step0,1,2,4..512), every:N, final, first, or names/steps such as step1000,2000; comma-separated, united.")] = "all",
    tokens: Annotated[int, typer.Option("--tokens", "-n", help="Tokens in the sample shared by every checkpoint of a tokenizer (the study: 50,000).")] = 50_000,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help="Tokens per sequence (default: the shortest context of the models, at most 2048).", show_default=False)] = None,
    seed: Seed = 0,
    batch_size: BatchSize = 8,
    layers: Annotated[str, typer.Option(help="Anisotropy of the last layer only (last) or of every layer (all).")] = "last",
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer folder or hub id for every model (default: each model's own).", show_default=False)] = None,
    tokens_per_step: TokensPerStep = None,
    params: Params = None,
    dtype: Dtype = "float32",
    device: Device = "auto",
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Measure again the checkpoints recorded as failed.")] = False,
    prefetch: Annotated[bool, typer.Option("--prefetch/--no-prefetch", help="Load the next checkpoint in a background thread while the current one is measured.")] = True,
    keep_downloads: Annotated[bool, typer.Option("--keep-downloads", help="Keep hub checkpoints in the Hugging Face cache (default: delete each one this sweep downloaded once it is measured).")] = False,
    text_field: TextField = "text",
    data_config: DataConfig = None,
    split: Split = "train",
    streaming: Streaming = True,
    trust_remote_code: TrustRemoteCode = False,
    ray: UseRay = False,
    ray_address: RayAddress = None,
    gpus_per_task: GpusPerTask = None,
    cpus_per_task: CpusPerTask = 1.0,
) -> None:
    """Measure every checkpoint of one or more models over training (study Fig. 1a, 1b, 3, 4, 5).

    Per checkpoint, on one token sample per tokenizer: cross-entropy (nats/token), last-layer anisotropy (every layer with --layers all), all singular values of the LM head, singular entropy, effective rank, hashes of the head and of all weights, wall time.

    Nothing is lost: each finished checkpoint is one atomic record OUTPUT/sweep/<model>@<revision>.json (+ .npz); a re-run skips them, so a killed sweep resumes where it stopped. Several sweeps may share OUTPUT (e.g. one per GPU): each checkpoint is claimed by one process (a lock file, taken over when its process died) and measured once. A sweep in which every checkpoint failed exits with code 1 and lists the failures. A checkpoint that fails to load or gives NaN is recorded as failed and the sweep goes on (--retry-failed measures those again). Revisions whose weights equal an earlier one are flagged (duplicate_of). The next checkpoint loads in the background while one is measured.

    Then, from the records: OUTPUT/sweep.csv, OUTPUT/saturation.csv (best/final step and loss, relative rise, spectrum-collapse and anisotropy-jump steps), OUTPUT/scaling_fit.csv when two or more models do not saturate, and OUTPUT/figures/fig1a, fig1b, fig3, fig4, fig5 (*.png).

    Example, on a GPU machine with hub access (all 154 checkpoints of Pythia-14m..410m): lmsat sweep --suite pythia --sizes 14m,31m,70m,160m,410m --revisions all --data hf:monology/pile-uncopyrighted --split validation -o runs/pythia

    Seeds (PolyPythias, arXiv 2503.09543; then lmsat causality runs/polypythias): lmsat sweep --suite polypythias --sizes 14m,70m --seeds 1-9 --revisions all --data hf:monology/pile-uncopyrighted --split validation -o runs/polypythias
    """
    from lmsat.cli.options import corpus_spec
    from lmsat.experiments.saturation import DEFAULT_MAX_RISE, DEFAULT_MIN_ANISOTROPY_RISE, DEFAULT_MIN_ENTROPY_RISE
    from lmsat.experiments.sweep import SweepSettings, plan_sweep, run_sweep
    from lmsat.cli.parse import parse_seeds
    from lmsat.loading.checkpoints import expand_sweep

    from lmsat.cli import validate as v

    v.check_output_dir(output)
    v.check_range("--tokens", tokens, 1)
    v.check_range("--seq-len", seq_len, 2)
    v.check_seed("--seed", seed)
    v.check_range("--batch-size", batch_size, 1)
    v.check_choice("--layers", layers, ("last", "all"))
    v.check_dtype(dtype)
    if not (ray or ray_address):  # with Ray the device is checked on the workers
        v.check_device(device)
    tps = parse_named_ints(tokens_per_step, "--tokens-per-step")
    n_params = parse_named_ints(params, "--params")
    settings = SweepSettings(
        n_tokens=tokens, seq_len=seq_len, seed=seed, batch_size=batch_size, dtype=dtype, device=device, layers=layers,
        prefetch=prefetch, retry_failed=retry_failed, keep_downloads=keep_downloads, trust_remote_code=trust_remote_code,
        tokenizer=tokenizer,
    )
    corpus = corpus_spec(data, text_field, data_config, split, streaming)
    sweep_models = expand_sweep(models or [], suite=suite, sizes=sizes, revisions=revisions, seeds=parse_seeds(seeds))
    if ray or ray_address:  # docs/distributed.md: one Ray task per checkpoint, records written by this driver
        summary, plan = _sweep_on_ray(sweep_models, corpus, output, settings, tps, n_params, ray_address, gpus_per_task, cpus_per_task)
    else:
        plan = plan_sweep(sweep_models, corpus, output, settings, tps, n_params)
        n_ckpt = sum(len(m.checkpoints) for m in plan.models)
        say(f"sweep: {len(plan.models)} model(s), {n_ckpt} checkpoint(s), {tokens:,} tokens in sequences of {plan.seq_len}, on {plan.device}")
        summary = run_sweep(plan, corpus, output, settings, say=say)
    say(
        f"measured {summary.measured} checkpoint(s) ({summary.checkpoints_per_minute:.1f}/min), skipped {summary.skipped} already done, "
        f"{len(summary.failed)} failed, {len(summary.duplicates)} duplicate(s); records: {output / 'sweep'}"
    )
    if summary.failed:
        say("failed checkpoints are recorded with their error; re-run with --retry-failed to measure them again.")
    _exit_if_all_failed(output)
    _analyse(output, DEFAULT_MAX_RISE, DEFAULT_MIN_ENTROPY_RISE, DEFAULT_MIN_ANISOTROPY_RISE, 0, None, n_params, tps, need_fit=False)


def _sweep_on_ray(sweep_models: Any, corpus: Any, output: Path, settings: Any, tps: dict[str, int], n_params: dict[str, int],
                  address: str | None, gpus_per_task: float | None, cpus_per_task: float) -> tuple[Any, Any]:
    """Validate on the driver (the device on the workers), then run the sweep as Ray tasks."""
    from dataclasses import replace

    from lmsat.device import DEVICES
    from lmsat.executor import RayExecutor, import_ray
    from lmsat.experiments.sweep import plan_sweep
    from lmsat.experiments.sweep_ray import default_resources, ray_device, run_sweep_distributed

    if settings.device not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)} (got '{settings.device}').")
    if cpus_per_task <= 0 or (gpus_per_task is not None and gpus_per_task < 0):
        raise UserError(f"--cpus-per-task must be positive and --gpus-per-task 0 or more (got {cpus_per_task}, {gpus_per_task}).")
    import_ray()
    plan = plan_sweep(sweep_models, corpus, output, replace(settings, device="cpu"), tps, n_params)  # the driver need not have the GPU
    executor = RayExecutor(address)
    try:
        plan.device = ray_device(executor, settings.device)
        resources = default_resources(executor, plan.device, gpus_per_task, cpus_per_task)
        n_ckpt = sum(len(m.checkpoints) for m in plan.models)
        say(
            f"sweep on Ray ({executor.cluster_cpus():g} CPUs, {executor.cluster_gpus():g} GPUs in the cluster): {len(plan.models)} model(s), "
            f"{n_ckpt} checkpoint(s), {settings.n_tokens:,} tokens in sequences of {plan.seq_len}, on {plan.device}, "
            f"{resources.cpus:g} CPU / {resources.gpus:g} GPU per task"
        )
        summary = run_sweep_distributed(plan, corpus, output, settings, executor, resources, say=say)
    finally:
        executor.close()
    return summary, plan


def _exit_if_all_failed(output: Path) -> None:
    """Exit with code 1 and a summary of the failures when no checkpoint of the run directory was measured."""
    import sys

    from lmsat.experiments.sweep import sweep_records
    from lmsat.kinds.base import value
    from lmsat.kinds.sweep import SweepRecord

    records = [SweepRecord.from_record(r) for r in sweep_records(output)]
    failed = [r for r in records if r.status == "failed"]
    if not records or len(failed) < len(records):
        return
    for rec in failed[:10]:
        say(f"failed: {rec.key}: {value(rec.error) or 'no error recorded'}")
    if len(failed) > 10:
        say(f"... and {len(failed) - 10} more (errors in {output / 'sweep'}/*.json)")
    print(f"lmsat: error: every checkpoint failed ({len(failed)} of {len(records)}); nothing to analyse. Fix the cause above "
          "and re-run with --retry-failed.", file=sys.stderr)
    raise typer.Exit(1)


@app.command(rich_help_panel=PANEL)
def saturation(
    run_dir: RunDir,
    max_rise: MaxRise = 0.01,
    min_entropy_rise: MinEntropyRise = 1.0,
    min_anisotropy_rise: MinAnisotropyRise = 0.3,
    from_step: FromStep = 0,
) -> None:
    """Saturation of each swept model, from the stored sweep records only (no model is loaded).

    Per model: best step and loss, final step and loss, relative rise final/best - 1 (it saturates above --max-rise), the step where the LM-head spectrum collapses (the singular entropy jumps by at least --min-entropy-rise nats) and where the last-layer anisotropy jumps (by at least --min-anisotropy-rise). Failed and duplicate-weight checkpoints are left out.

    Writes RUN_DIR/sweep.csv, RUN_DIR/saturation.csv, one `saturation` record per model and the five figures in RUN_DIR/figures (Fig. 1b uses the stored scaling fit, if any).
    """
    from lmsat.experiments.saturation import run_saturation
    from lmsat.experiments.sweep import sweep_records
    from lmsat.figures.outputs import refresh_sweep

    from lmsat.cli import validate as v

    v.check_input_dir(run_dir, "run directory")
    v.check_output_dir(run_dir, option="RUN_DIR")
    v.check_range("--max-rise", max_rise, 0)
    v.check_range("--min-entropy-rise", min_entropy_rise, 0, inclusive="neither")
    v.check_range("--min-anisotropy-rise", min_anisotropy_rise, 0, inclusive="neither")
    v.check_range("--from-step", from_step, 0)
    sweep_records(run_dir)  # a clear error when there are none
    table, frame = run_saturation(run_dir, max_rise, min_entropy_rise, min_anisotropy_rise, from_step)
    _show(table, SATURATION_VIEW, "Saturation per model (rise = final/best - 1)")
    figures = refresh_sweep(run_dir).figures  # Fig. 1b with the stored scaling fit, if any
    say(f"tables: {run_dir / 'sweep.csv'}, {run_dir / 'saturation.csv'}  figures: {', '.join(str(p) for p in figures)}")


@app.command("scaling-fit", rich_help_panel=PANEL)
def scaling_fit(
    run_dir: RunDir,
    models: FitModels = None,
    params: Params = None,
    tokens_per_step: TokensPerStep = None,
    max_rise: MaxRise = 0.01,
) -> None:
    """Fit A and alpha of L = E + A/N^alpha + B/T^beta (E = 1.69, B = 410.7, beta = 0.28 fixed) on final checkpoints.

    Reads the stored sweep records only. N = parameters, T = step x tokens per step. The fit uses the models named with --models, else those that do not saturate (relative rise <= --max-rise); it needs two or more. Reports each model's final and best underperformance L_obs / L_pred - 1 and their means over the models not in the fit (the study: about +8% final, +4% best for Pythia <= 160m).

    Writes RUN_DIR/scaling_fit.csv, the record RUN_DIR/scaling_fit/fit.json and RUN_DIR/figures/fig1b_loss_vs_compute.png.
    """
    from lmsat.experiments.scaling import run_scaling_fit
    from lmsat.experiments.sweep import sweep_records
    from lmsat.figures.outputs import refresh_sweep

    from lmsat.cli import validate as v

    v.check_input_dir(run_dir, "run directory")
    v.check_output_dir(run_dir, option="RUN_DIR")
    v.check_range("--max-rise", max_rise, 0)
    sweep_records(run_dir)  # a clear error when there are none
    _, table, summary = run_scaling_fit(
        run_dir, _split_names(models) or None, parse_named_ints(params, "--params"), parse_named_ints(tokens_per_step, "--tokens-per-step"), max_rise
    )
    _show(table, FIT_VIEW, "Scaling-law extrapolation (under = L_obs / L_pred - 1)")
    say(
        f"A = {summary['A']:.4g}, alpha = {summary['alpha']:.4f} on {', '.join(short_name(m) for m in summary['fitted_models'])} "
        f"(rmse {summary['rmse']:.4f} nats; study: A = 119.09, alpha = 0.246). Mean underperformance over "
        f"{summary['mean_over']}: final {_pct(summary['mean_final_underperformance'])}, best {_pct(summary['mean_best_underperformance'])}"
    )
    for note in summary["notes"]:
        say(f"note: {note}")
    figures = refresh_sweep(run_dir, summary).figures  # sweep.csv and the five figures, Fig. 1b with this fit
    say(f"table: {run_dir / 'scaling_fit.csv'}  record: {run_dir / 'scaling_fit' / 'fit.json'}  figures: {', '.join(str(p) for p in figures)}")
