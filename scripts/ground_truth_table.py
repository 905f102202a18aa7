"""The head x d x family table of docs/ground-truth.md from the run folders of scripts/ground_truth_heads.sh.

Reads every `train` record (lmsat.kinds.train) under OUT_DIR/runs-*, and the SVD-truncation bound of each
language at d from its `synth` truth record (lmsat.kinds.synth); prints one Markdown row per model.
Usage: python scripts/ground_truth_table.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from lmsat.kinds.synth import SynthRecord
from lmsat.kinds.train import TrainRecord
from lmsat.store import Store


def main(out: Path) -> None:
    rows = []
    for runs in sorted(out.glob("runs-*")):
        fam = next(f for f in ("low-rank-logits", "low-rank-probs") if f"runs-{f}-" in runs.name)
        steps = runs.name.split("-steps")[1].split("-seed")[0]
        truth = SynthRecord.load(Store(out / f"lang-{fam}"))[0]
        bound = truth.svd_truncation_gap or {}
        for rec in TrainRecord.load(Store(runs)):
            d = rec.hidden_size
            seed = (rec.inputs.get("settings") or {}).get("seed", rec.inputs.get("seed"))
            rows.append((fam, rec.head, d, seed, steps, rec.final_gap, rec.final_gap_standard_error, rec.best_gap,
                         bound.get(str(d)), rec.head_parameters, rec.head_flops_per_token, rec.final_eval_loss,
                         rec.reference_entropy, rec.wall_seconds))
    print("| family | head | d | seed | steps | final gap (nats/token) | SE | best gap | SVD-truncation bound at d "
          "| head params | head FLOPs/token | held-out loss | entropy | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def f(x, n=3):
        return "-" if x is None else (f"{x:.{n}f}" if isinstance(x, float) else str(x))

    for r in sorted(rows, key=lambda r: (r[0], r[2], r[1], int(r[4]), str(r[3]))):
        print("| " + " | ".join([r[0], str(r[1]), str(r[2]), str(r[3]), r[4], f(r[5]), f(r[6]), f(r[7]), f(r[8]),
                                 f(r[9]), f(r[10]), f(r[11]), f(r[12]), f(r[13], 0)]) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
