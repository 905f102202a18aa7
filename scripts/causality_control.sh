#!/usr/bin/env bash
# Positive control for docs/causality.md: settings that DO produce a late held-out loss rise on 2 CPU cores,
# by over-training on a small slice (16,384 tokens = 256 windows) of the synthetic language of
# scripts/causality_grid.sh for 25 epochs. The rise here is over-fitting, not the study's saturation; it
# tests whether the onset rule, the lead/lag and the co-occurrence table see a rise and order it
# against the head's rank when one exists.
#
#   weight decay {0.01, 0.5} x hidden size {8, 32} x seeds {0, 1, 2}   (lmsat train --seeds)
#
# Usage: scripts/causality_control.sh OUT_DIR     (OUT_DIR/lang written by scripts/causality_grid.sh)
# Then:  lmsat causality OUT_DIR/overfit-*
set -euo pipefail
OUT=${1:?usage: scripts/causality_control.sh OUT_DIR}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} LMSAT_PROGRESS=${LMSAT_PROGRESS:-0}
for wd in 0.01 0.5; do
  run="$OUT/overfit-b16-wd$wd"
  echo "$(date -u +%H:%M:%S) $run"
  lmsat train --data "$OUT/lang/corpus" --tokenizer "$OUT/lang/tokenizer" --eval-data "$OUT/lang/heldout" --max-tokens 16384 \
    --hidden-sizes 8,32 --layers 2 --heads 4 --seq-len 64 --batch-size 16 --steps 400 --warmup 40 --lr 3e-3 \
    --weight-decay $wd --checkpoint-every 40 --eval-tokens 8192 --log-every 10 --seeds 0,1,2 -o "$run" > "$run.log" 2>&1 \
    || echo "failed: $run (see $run.log)"
done
echo "$(date -u +%H:%M:%S) control done"
