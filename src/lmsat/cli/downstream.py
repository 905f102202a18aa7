"""`lmsat downstream`: zero-shot tasks on the best and the final checkpoint (study Table 1), with lm-evaluation-harness."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmsat.cli.app import app
from lmsat.cli.options import BatchSize, Device, Dtype, Force, TrustRemoteCode
from lmsat.cli.ray_options import CpusPerTask, GpusPerTask, RayAddress, UseRay, grid_executor
from lmsat.cli.show import print_table, say
from lmsat.errors import UserError


@app.command(rich_help_panel="Checkpoints over training")
def downstream(
    run_dir: Annotated[
        Optional[Path],
        typer.Argument(help="Run directory of `lmsat sweep`: its records pick each model's best (lowest loss) and final (last step) "
                            "checkpoint; results go into it too.", show_default=False),
    ] = None,
    model: Annotated[
        Optional[list[str]],
        typer.Option("--model", "-m", help="With --revisions: a hub id or a local folder of stepN checkpoint folders. "
                                           "With RUN_DIR: evaluate only this model of the sweep (repeatable)."),
    ] = None,
    revisions: Annotated[
        Optional[str],
        typer.Option(help="BEST,FINAL: the two revisions of --model (hub branches, or checkpoint folder names), e.g. step80000,step143000."),
    ] = None,
    tasks: Annotated[
        Optional[str],
        typer.Option(help="Comma-separated lm-eval task names or task YAML files (default: the study's "
                          "lambada_openai,storycloze_2016,wikitext,sciq,arc_easy; storycloze_2016 only with --storycloze-dir)."),
    ] = None,
    limit: Annotated[
        Optional[str],
        typer.Option(help="Documents per task (a whole number) or a fraction below 1; passed to the harness. For testing only."),
    ] = None,
    include_path: Annotated[
        Optional[list[Path]],
        typer.Option("--include-path", help="Folder of custom lm-eval task YAML files, e.g. over local data (repeatable)."),
    ] = None,
    storycloze_dir: Annotated[
        Optional[Path],
        typer.Option("--storycloze-dir", help="Folder with the StoryCloze 2016 CSV files (manual download from "
                                              "cs.rochester.edu/nlp/rocstories; not redistributable)."),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Run directory for the results (default: RUN_DIR, or lmsat-runs with --model)."),
    ] = None,
    batch_size: BatchSize = 8,
    device: Device = "auto",
    dtype: Dtype = "float32",
    bootstrap_iters: Annotated[
        int, typer.Option("--bootstrap-iters", help="Bootstrap draws for the harness's standard errors (0: none).")
    ] = 100000,
    log_samples: Annotated[
        bool, typer.Option("--log-samples/--no-log-samples", help="Keep the harness's per-document outputs (JSONL per task).")
    ] = True,
    trust_remote_code: TrustRemoteCode = False,
    force: Force = False,
    ray: UseRay = False,
    ray_address: RayAddress = None,
    gpus_per_task: GpusPerTask = None,
    cpus_per_task: CpusPerTask = 1.0,
) -> None:
    """Evaluate each model's best and final checkpoint on zero-shot tasks with lm-evaluation-harness (study Table 1).

    Give a sweep run directory (best = lowest cross-entropy, final = largest step, among the
    checkpoints measured without failure and not duplicating another's weights), or
    --model M --revisions BEST,FINAL. Local checkpoint
    folders (OUT/<model>/step<N>/) and hub revisions work the same way. Every task is the
    harness's own, zero-shot; --tasks, --limit and --include-path pass through.

    Writes one record per (checkpoint, task set) in OUTPUT/downstream/ (a re-run skips finished
    ones), the harness's log, results JSON and samples in OUTPUT/downstream/logs/ and
    OUTPUT/downstream/harness/, one downstream_table record per model, and OUTPUT/downstream.csv:
    best and final side by side with the difference (final - best; accuracies in %).

    Table 1 for Pythia-160M (needs the hub; the sweep finds the best checkpoint):
    lmsat sweep --suite pythia --sizes 160m --revisions all --data hf:monology/pile-uncopyrighted
    --text-field text -o runs/pythia-160m && lmsat downstream runs/pythia-160m --storycloze-dir DIR
    """
    from lmsat.experiments import downstream as ds
    from lmsat.figures.outputs import refresh_downstream
    from lmsat.kinds import downstream as downstream_kind
    from lmsat.kinds.downstream import DownstreamTableRecord

    from lmsat.cli import validate as v

    v.check_output_dir(output or run_dir or Path("lmsat-runs"))
    v.check_range("--batch-size", batch_size, 1)
    v.check_range("--bootstrap-iters", bootstrap_iters, 0, hint="0 = no standard errors")
    v.check_dtype(dtype)
    v.check_device(device)
    ds.require_lm_eval()
    models = list(model or [])
    if run_dir is not None:
        if revisions is not None:
            raise UserError("give either RUN_DIR (best and final from a sweep) or --model with --revisions, not both.")
        out = output or run_dir
    else:
        if not models or revisions is None:
            raise UserError("nothing to evaluate: give a sweep RUN_DIR, or --model M --revisions BEST,FINAL.")
        if len(models) != 1:
            raise UserError("--revisions applies to one --model; evaluate one model at a time, or use a sweep RUN_DIR.")
        out = output or Path("lmsat-runs")
    from lmsat.cli.parse import parse_limit

    limit_value = parse_limit(limit)
    selections = ds.sweep_selection(run_dir, models or None) if run_dir is not None else [ds.explicit_selection(models[0], revisions)]
    plan = ds.resolve_tasks(tasks, include_path or [], storycloze_dir, limit_value)
    for note in plan.notes:
        say(f"note: {note}")
    for sel in selections:
        for note in sel.notes:
            say(f"note: {sel.model}: {note}")

    def on_start(ckpt, role, index, total, log_path) -> None:
        say(f"[{index}/{total}] {ckpt.key} ({role} checkpoint): lm-eval on {', '.join(plan.names)}; log: {log_path}")

    with grid_executor(ray, ray_address, device, gpus_per_task, cpus_per_task, "downstream") as (executor, resources):
        tables = ds.run_downstream(selections, plan, out, dtype=dtype, device=device, batch_size=batch_size,
                                   bootstrap_iters=bootstrap_iters, log_samples=log_samples,
                                   trust_remote_code=trust_remote_code, force=force, on_start=on_start,
                                   executor=executor, resources=resources)  # --ray: one task per checkpoint
    outputs = refresh_downstream(out)
    for rec in (DownstreamTableRecord.from_record(t) for t in tables):
        print_table(display_frame(downstream_kind.frame([rec])), title=table_title(rec), floats=3)
        n, judged = rec.n_metrics, rec.n_judged
        rest = f" ({n - judged} unchanged or without a direction)" if n > judged else ""
        say(f"worse at the final checkpoint: {rec.n_worse_at_final} of {n} metrics{rest}.")
    say(f"results: {out / ds.KIND}  table: {outputs.csv}  harness logs: {out / ds.KIND / 'logs'}")


def table_title(rec) -> str:
    """``model: best REV (loss L) vs final REV (loss L)`` for one downstream_table record."""
    from lmsat.loading.checkpoints import short_name

    def side(s: dict) -> str:
        loss = f" (loss {s['cross_entropy']:.4f})" if s.get("cross_entropy") is not None else ""
        return f"{s['revision']}{loss}"

    title = f"{short_name(rec.inputs['model'])}: best {side(rec.inputs['best'])} vs final {side(rec.inputs['final'])}"
    return title + (" - the best checkpoint is the final one" if rec.best_is_final else "")


def display_frame(frame):
    """The printed comparison: metric with its unit, best, final, final - best, worse at final, and the study's values."""
    shown = frame.copy()
    shown["metric"] = [f"{m} ({u})" if u else m for m, u in zip(shown["metric"], shown["unit"])]
    shown["worse"] = ["-" if w is None or w != w else ("yes" if w else "no") for w in shown["worse_at_final"]]
    shown = shown.rename(columns={"difference": "final-best"})
    cols = ["task", "metric", "best", "final", "final-best", "worse"]
    if shown["study_best"].notna().any():
        shown = shown.rename(columns={"study_best": "study best", "study_final": "study final"})
        cols += ["study best", "study final"]
    return shown[cols]
