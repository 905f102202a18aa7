"""`lmsat causality`: does the head's rank collapse precede (and go with) the loss rise, across seeds?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lmsat.cli.app import app
from lmsat.cli.show import print_table, say

PANEL = "Checkpoints over training"


@app.command(rich_help_panel=PANEL)
def causality(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories holding sweep records (lmsat sweep -o) or train records (lmsat train -o), e.g. one per seed or grid cell.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to store the causality record, CSV tables and figure (default: the first RUN_DIR).", show_default=False)] = None,
    max_rise: Annotated[float, typer.Option("--max-rise", help="A run saturates when final/best loss - 1 exceeds this (as lmsat saturation); the loss-rise onset needs a rise of this x best loss.")] = 0.01,
    min_entropy_rise: Annotated[float, typer.Option("--min-entropy-rise", help="Smallest rise of the head's singular entropy (nats) that counts as a collapse.")] = 1.0,
    rank_drop: Annotated[float, typer.Option("--rank-drop", help="Smallest fall of the head's effective rank, as a fraction of its peak, that counts as a collapse.")] = 0.25,
    min_anisotropy_rise: Annotated[float, typer.Option("--min-anisotropy-rise", help="Smallest rise of last-layer anisotropy that counts as a jump.")] = 0.3,
    low_rank: Annotated[float, typer.Option("--low-rank", help="A run is low-rank when its final effective rank / d is below this (co-occurrence table).")] = 0.5,
    low_rank_linear: Annotated[float, typer.Option("--low-rank-linear", help="The same with Kulkarni et al.'s effective rank exp H(s/sum s), which is larger for the same head (a co-occurrence row when the records store it).")] = 0.5,
    from_step: Annotated[int, typer.Option("--from-step", help="Ignore checkpoints before this step (e.g. 1000 to skip Pythia's warm-up).")] = 0,
    level: Annotated[float, typer.Option("--level", help="Confidence level of every interval.")] = 0.95,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples.")] = 10_000,
) -> None:
    """Onsets, lead/lag across seeds, co-occurrence and within-run association of head collapse and loss rise.

    From stored records only (no model is loaded). Per run (one model, one seed): the onset of the late loss rise, of the head collapse (singular-entropy rise; effective-rank fall) and of the last-layer anisotropy jump, all by the one onset rule that lmsat saturation uses (docs/causality.md); whether it saturates; whether its head ends low-rank; the correlation of effective rank and loss over checkpoints and of their step-to-step changes (detrended), with Fisher-z intervals.

    Across seeds: the lead of each collapse sign over the loss rise (loss onset - sign onset, in steps) with a bootstrap interval and the fraction of seeds where it precedes; groups (the same model and settings over seeds) with mean and spread; co-occurrence counts (low rank x saturation, collapse x saturation, as arXiv 2602.20433). Seeds come from PolyPythias names (pythia-70m-seed3) or lmsat train's --seed/--seeds (--weight-seed, --data-seed). Collapses that come before the loss minimum are counted apart: they are early-training dips, which --from-step skips.

    Writes OUTPUT/causality/ (one record that lmsat report renders), OUTPUT/causality_runs.csv, OUTPUT/causality_groups.csv and OUTPUT/figures/causality.png.

    Example: lmsat causality runs/polypythias (after lmsat sweep --suite polypythias --sizes 14m,70m --seeds 1-9 -o runs/polypythias).
    """
    from lmsat.experiments.causality import Thresholds
    from lmsat.experiments.causality import run_causality
    from lmsat.figures.outputs import refresh_causality
    from lmsat.report.causality import cooccurrence_frame, group_frame, lead_lag_frame

    t = Thresholds(max_rise=max_rise, min_entropy_rise=min_entropy_rise, rank_drop=rank_drop, min_anisotropy_rise=min_anisotropy_rise,
                   low_rank=low_rank, low_rank_linear=low_rank_linear, from_step=from_step, level=level, n_boot=n_boot)
    out = output if output is not None else run_dirs[0]
    from lmsat.cli import validate as v

    v.check_output_dir(out)
    for run_dir in run_dirs:
        v.check_input_dir(run_dir, "run directory")
    # the same bounds as lmsat saturation
    v.check_range("--max-rise", max_rise, 0)
    v.check_range("--min-entropy-rise", min_entropy_rise, 0, inclusive="neither")
    v.check_range("--min-anisotropy-rise", min_anisotropy_rise, 0, inclusive="neither")
    v.check_range("--rank-drop", rank_drop, 0, 1, inclusive="neither")
    v.check_range("--low-rank", low_rank, 0, 1, inclusive="neither")
    v.check_range("--low-rank-linear", low_rank_linear, 0, 1, inclusive="neither")
    v.check_range("--from-step", from_step, 0)
    v.check_range("--level", level, 0, 1, inclusive="neither")
    v.check_range("--n-boot", n_boot, 1)
    record = run_causality(run_dirs, out, t)
    fig = refresh_causality(out).figures[0]
    from lmsat.kinds.causality import CausalityRecord

    res = CausalityRecord.from_record(record).results()
    print_table(group_frame(res), title=f"Per group over seeds (mean ± sd); lead = loss-rise onset - rank-collapse onset, steps [{100 * level:.0f}% bootstrap interval]")
    print_table(lead_lag_frame(res), title="Lead of each collapse sign over the loss rise, all runs")
    print_table(cooccurrence_frame(res), title=f"Co-occurrence (runs); saturates = final/best - 1 > {max_rise}")
    s = res["summary"]
    say(f"within runs: r(eff. rank, loss) = {_f(s['r_mean'])} [{_f(s['r_low'])}, {_f(s['r_high'])}]; detrended (differences) "
        f"{_f(s['r_detrended_mean'])} [{_f(s['r_detrended_low'])}, {_f(s['r_detrended_high'])}] (mean over runs, bootstrap interval)")
    for line in res["verdict"]:
        say(f"- {line}")
    say(f"record: {record.path}  tables: {Path(out) / 'causality_runs.csv'}, {Path(out) / 'causality_groups.csv'}  figure: {fig}")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:+.2f}"
