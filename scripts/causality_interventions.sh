#!/usr/bin/env bash
# The head interventions of docs/causality.md on the over-fitting control cell of scripts/causality_control.sh
# (16,384 training tokens of the synthetic language, batch 16 x 400 steps, weight decay 0.01, d = 8 and 32,
# seeds 0, 1, 2), each changing the head's rank without changing d:
#
#   specreg   lmsat train --head-spectral-reg 1   (loss + 1 x (1 - H(s^2/sum s^2) / ln min(V, d)))
#   frozen    lmsat train --head-init random --freeze-head   (a frozen random head, all singular values equal)
#   (mos:4, the third one, is in scripts/causality_control.sh's companion run overfit-b16-wd0.01-mos4)
#
# then a third seed (2) of the synthetic grid's 8 cells (grid-s2: scripts/causality_grid.sh OUT 2 synth), and seeds 1
# and 2 of the real-text cell (text-seeds: Brown + KJV, batch 16, weight decay 0.01, as scripts/causality_grid.sh).
# Usage: scripts/causality_interventions.sh OUT_DIR [STAGES]   (OUT_DIR/lang and OUT_DIR/text from scripts/causality_grid.sh;
#        STAGES default "specreg frozen grid-s2 text-seeds")
# Then:  lmsat causality OUT_DIR/overfit-b16-wd0.01 OUT_DIR/overfit-b16-wd0.01-specreg1 -o ANALYSIS   (and so on)
set -euo pipefail
OUT=${1:?usage: scripts/causality_interventions.sh OUT_DIR [STAGES]}
STAGES=${2:-"specreg frozen grid-s2 text-seeds"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} LMSAT_PROGRESS=${LMSAT_PROGRESS:-0}
control() {  # the control cell's command with extra head options
  local run=$1; shift
  echo "$(date -u +%H:%M:%S) $run"
  lmsat train --data "$OUT/lang/corpus" --tokenizer "$OUT/lang/tokenizer" --eval-data "$OUT/lang/heldout" --max-tokens 16384 \
    --hidden-sizes 8,32 --layers 2 --heads 4 --seq-len 64 --batch-size 16 --steps 400 --warmup 40 --lr 3e-3 \
    --weight-decay 0.01 --checkpoint-every 40 --eval-tokens 8192 --log-every 10 --seeds 0,1,2 "$@" -o "$run" > "$run.log" 2>&1 \
    || echo "failed: $run (see $run.log)"
}
for stage in $STAGES; do
  case $stage in
    specreg) control "$OUT/overfit-b16-wd0.01-specreg1" --head-spectral-reg 1 ;;
    frozen) control "$OUT/overfit-b16-wd0.01-frozen-random" --head-init random --freeze-head ;;
    grid-s2) bash "$(dirname "$0")/causality_grid.sh" "$OUT" 2 synth ;;
    text-seeds)
      for seed in 1 2; do  # the grid's text command for one cell (768 steps of batch 16 x 64 tokens)
        run="$OUT/text-b16-wd0.01-s$seed"
        echo "$(date -u +%H:%M:%S) $run"
        lmsat train --data "$OUT/text/corpus" --tokenizer "$OUT/text/tokenizer" --eval-data "$OUT/text/heldout" --hidden-sizes 8,32 \
          --layers 2 --heads 4 --seq-len 64 --batch-size 16 --steps 768 --warmup 76 --lr 3e-3 --weight-decay 0.01 \
          --checkpoint-every 64 --eval-tokens 8192 --log-every 10 --seed $seed -o "$run" > "$run.log" 2>&1 || echo "failed: $run (see $run.log)"
      done ;;
    *) echo "unknown stage $stage (specreg, frozen, grid-s2, text-seeds)"; exit 2 ;;
  esac
done
echo "$(date -u +%H:%M:%S) interventions done"
