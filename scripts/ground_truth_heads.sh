#!/usr/bin/env bash
# The head x d x family table of docs/ground-truth.md ("Heads beyond the softmax", issue 14).
#
# Both synthetic families of `lmsat synth` (low-rank logits; low-rank probabilities), V = C = 256,
# R = 32, 200k training tokens, seed 0; models of 1 layer, 2 attention heads, sequences of 32,
# batches of 16, lr 3e-3, warm-up 30, cosine; held-out 4096 tokens. Heads softmax, mos:4,
# sigsoftmax, mlp (and mos:32 on the probabilities family); d = HIDDEN; seeds SEEDS.
# HEADS="softmax mos:4" limits the heads. Every (family, head, seed) is one `lmsat train` folder; a re-run resumes (finished models skipped).
#
# Usage: scripts/ground_truth_heads.sh OUT_DIR [STEPS] [HIDDEN] [SEEDS] [FAMILIES]
#        (defaults: 300, "8,16,32", "0", "low-rank-logits low-rank-probs")
# Then:  python scripts/ground_truth_table.py OUT_DIR      (the Markdown table)
set -euo pipefail
OUT=${1:?usage: scripts/ground_truth_heads.sh OUT_DIR [STEPS] [HIDDEN] [SEEDS] [FAMILIES]}
STEPS=${2:-300}
HIDDEN=${3:-8,16,32}
SEEDS=${4:-0}
FAMILIES=${5:-"low-rank-logits low-rank-probs"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} LMSAT_PROGRESS=${LMSAT_PROGRESS:-0}
mkdir -p "$OUT"
for fam in $FAMILIES; do
  if ! ls "$OUT/lang-$fam"/synth/language*.json >/dev/null 2>&1; then
    lmsat synth -o "$OUT/lang-$fam" --family "$fam" --vocab 256 --contexts 256 --rank 32 -n 200000 --heldout-tokens 8192
  fi
  heads=${HEADS:-"softmax mos:4 sigsoftmax mlp"}
  [ "$fam" = low-rank-probs ] && [ -z "${HEADS:-}" ] && heads="$heads mos:32"
  for seed in $SEEDS; do
    for head in $heads; do
      lmsat train --data "$OUT/lang-$fam/corpus" --tokenizer "$OUT/lang-$fam/tokenizer" \
        -o "$OUT/runs-$fam-steps$STEPS-seed$seed" --hidden-sizes "$HIDDEN" --head "$head" --seed "$seed" \
        --layers 1 --heads 2 --seq-len 32 --batch-size 16 --steps "$STEPS" --lr 3e-3 --warmup 30 \
        --checkpoint-every $((STEPS / 4 > 0 ? STEPS / 4 : 1)) --eval-tokens 4096 --device cpu
    done
  done
done
