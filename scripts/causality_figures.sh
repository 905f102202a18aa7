#!/usr/bin/env bash
# The analyses and figures docs/causality.md cites, from the run folders of scripts/causality_grid.sh,
# scripts/causality_control.sh and scripts/causality_interventions.sh (stored records only; no training).
# Usage: scripts/causality_figures.sh GRID_DIR ANALYSIS_DIR [IMG_DIR]   (IMG_DIR default docs/img)
set -euo pipefail
G=${1:?usage: scripts/causality_figures.sh GRID_DIR ANALYSIS_DIR [IMG_DIR]}
A=${2:?usage: scripts/causality_figures.sh GRID_DIR ANALYSIS_DIR [IMG_DIR]}
IMG=${3:-docs/img}
export COLUMNS=${COLUMNS:-220} LMSAT_PROGRESS=0
mkdir -p "$A" "$IMG"
cells() { for f in "$@"; do [ -d "$f/train" ] && echo "$f"; done; }
lmsat causality $(cells "$G"/synth-b*-s[0-9]) -o "$A/synth" > "$A/synth.txt"
lmsat causality $(cells "$G"/text-b*-s[0-9]) -o "$A/text" > "$A/text.txt"
lmsat causality "$G/overfit-b16-wd0.01" "$G/overfit-b16-wd0.5" -o "$A/overfit" > "$A/overfit.txt"
lmsat causality "$G/overfit-b16-wd0.01" "$G/overfit-b16-wd0.5" -o "$A/overfit-late" --from-step 120 > "$A/overfit-late.txt"
I="$G/overfit-b16-wd0.01 $G/overfit-b16-wd0.01-mos4 $G/overfit-b16-wd0.01-specreg1 $G/overfit-b16-wd0.01-frozen-random"
lmsat causality $I -o "$A/interventions" > "$A/interventions.txt"
lmsat causality $I -o "$A/interventions-late" --from-step 120 > "$A/interventions-late.txt"
cp "$A/synth/figures/causality.png" "$IMG/causality_synth_grid.png"
cp "$A/overfit/figures/causality.png" "$IMG/causality_overfit.png"
cp "$A/interventions/figures/causality.png" "$IMG/causality_interventions.png"
# held-out loss and head effective rank over training of the d = 32 intervention runs: seeds as mean + min-max band
python - "$IMG" $I <<'PY'
import sys
from pathlib import Path
from lmsat.figures.training import plot_head_over_training, plot_training_curves
from lmsat.store import Store

img, folders = Path(sys.argv[1]), sys.argv[2:]
names = {"overfit-b16-wd0.01": "softmax", "overfit-b16-wd0.01-mos4": "MoS K=4", "overfit-b16-wd0.01-specreg1": "spectral reg. 1",
         "overfit-b16-wd0.01-frozen-random": "frozen random head"}
records, labels = [], {}
for f in folders:
    for rec in Store(f).records("train"):
        if rec.results["hidden_size"] == 32:
            records.append(rec)
            labels[str(rec.path)] = f"d=32, {names.get(Path(f).name, Path(f).name)}"
plot_training_curves(records, img / "causality_interventions_loss.png", title="Over-fitting cell, d = 32: held-out loss (3 seeds each)", labels=labels)
plot_head_over_training(records, img / "causality_interventions_head.png", labels=labels)
PY
# effects: group B minus group A (difference of the seed means) with a percentile bootstrap interval (independent
# resamples of the two groups' seeds, lmsat.measure.onsets.bootstrap_means, 10,000 each): each intervention against
# the softmax head of the same d, and in the grid batch 128 vs 16 and weight decay 0.5 vs 0.01 per d.
effects() {  # effects RUNS_CSV OUT_CSV "A=>B" ...
python - "$@" <<'PY'
import sys
import numpy as np
import pandas as pd
from lmsat.measure.onsets import bootstrap_means

runs, out, pairs = pd.read_csv(sys.argv[1]), sys.argv[2], [p.split("=>") for p in sys.argv[3:]]
rows = []
for a_name, b_name in pairs:
    a_runs, b_runs = runs[runs["group"] == a_name], runs[runs["group"] == b_name]
    for col in ("relative_rise", "best_loss", "final_rank_fraction", "final_rank_fraction_linear"):
        a, b = a_runs[col].to_numpy(float), b_runs[col].to_numpy(float)
        lo, hi = np.quantile(bootstrap_means(b, 10_000, 1) - bootstrap_means(a, 10_000, 0), [0.025, 0.975])
        rows.append({"A": a_name, "B": b_name, "measure": col, "seeds A": len(a), "seeds B": len(b), "mean A": a.mean(),
                     "mean B": b.mean(), "sd B": b.std(ddof=1), "B - A": b.mean() - a.mean(), "low": lo, "high": hi})
pd.DataFrame(rows).to_csv(out, index=False)
print(pd.DataFrame(rows).to_string(index=False))
PY
}
pairs=()
for d in 8 32; do
  for x in mos4 specreg1 random-head-frozen-head; do pairs+=("gpt-neox-d$d-l2=>gpt-neox-d$d-l2-$x"); done
done
effects "$A/interventions/causality_runs.csv" "$A/interventions_effects.csv" "${pairs[@]}"
pairs=()
for d in 8 32; do
  for wd in 0.01 0.5; do pairs+=("gpt-neox-d$d-l2 batch=16 wd=$wd=>gpt-neox-d$d-l2 batch=128 wd=$wd"); done
  for b in 16 128; do pairs+=("gpt-neox-d$d-l2 batch=$b wd=0.01=>gpt-neox-d$d-l2 batch=$b wd=0.5"); done
done
effects "$A/synth/causality_runs.csv" "$A/synth_effects.csv" "${pairs[@]}"
effects "$A/text/causality_runs.csv" "$A/text_effects.csv" "${pairs[@]}"
echo "analyses in $A, figures in $IMG"
