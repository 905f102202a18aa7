#!/usr/bin/env bash
# A Kulkarni-style controlled grid (arXiv 2602.20433) sized for 2 CPU cores, used by docs/causality.md.
#
#   batch size {16, 128} x weight decay {0.01, 0.5} x hidden size {8, 32} x seeds {0, 1, 2}
#   on a synthetic language (low-rank logits, V = C = 256, R = 32, 262,144 training tokens)
#   and on real text (Brown + KJV, a 1,024-token byte-level BPE trained here, ~300k training tokens).
#
# Every run sees the same number of tokens (786,432 = 3 epochs of the synthetic corpus), so the
# batch size changes the number of optimizer steps (768 or 96), as in the study it follows.
# Each (corpus, batch, wd, seed) is one `lmsat train` output folder holding both hidden sizes;
# the loop runs seed-major, so stopping it early still leaves whole seeds. Re-running resumes.
#
# Usage: scripts/causality_grid.sh OUT_DIR [SEEDS] [CORPORA]     (defaults: "0 1 2", "synth text")
# Then:  lmsat causality OUT_DIR/synth-* ; lmsat causality OUT_DIR/text-*
set -euo pipefail
OUT=${1:?usage: scripts/causality_grid.sh OUT_DIR [SEEDS] [CORPORA]}
SEEDS=${2:-"0 1 2"}
CORPORA=${3:-"synth text"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} LMSAT_PROGRESS=${LMSAT_PROGRESS:-0}
mkdir -p "$OUT"
TOKENS=786432
SEQ=64

if ! ls "$OUT"/lang/synth/language*.json >/dev/null 2>&1; then
  lmsat synth --family low-rank-logits --vocab 256 --contexts 256 --rank 32 -n 262144 --heldout-tokens 65536 -o "$OUT/lang"
fi

if [ ! -f "$OUT/text/tokenizer/tokenizer.json" ]; then
  python - "$OUT/text" <<'EOF'
import sys
from pathlib import Path
from lmsat.assets import brown_path, kjv_path
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

out = Path(sys.argv[1])
brown = [p.read_text(encoding="utf-8") for p in sorted(Path(brown_path()).glob("*.txt"))]
kjv = (Path(kjv_path()) / "kjv.txt").read_text(encoding="utf-8").splitlines()
# KJV verses in 200 chunks of consecutive verses; Brown's 500 samples as they are.
step = -(-len(kjv) // 200)
kjv_docs = ["\n".join(kjv[i:i + step]) for i in range(0, len(kjv), step)]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<|endoftext|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tok.train_from_iterator(brown + kjv_docs, trainer)
PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(out / "tokenizer")
# training text: alternate Brown samples and KJV chunks until ~300k tokens; held-out: the next ~40k, disjoint.
docs = [d for pair in zip(brown[::2], kjv_docs[::2]) for d in pair]
held = [d for pair in zip(brown[1::2], kjv_docs[1::2]) for d in pair]
for name, pool, budget in (("corpus", docs, 300_000), ("heldout", held, 40_000)):
    (out / name).mkdir(parents=True, exist_ok=True)
    n = 0
    for k, doc in enumerate(pool):
        if n >= budget:
            break
        (out / name / f"part-{k:04d}.txt").write_text(doc + "\n", encoding="utf-8")
        n += len(tok.encode(doc).ids) + 1
    print(f"{name}: {n} tokens")
EOF
fi

for seed in $SEEDS; do
  for corpus in $CORPORA; do
    if [ "$corpus" = synth ]; then data="$OUT/lang/corpus"; tok="$OUT/lang/tokenizer"; eval="$OUT/lang/heldout"
    else data="$OUT/text/corpus"; tok="$OUT/text/tokenizer"; eval="$OUT/text/heldout"; fi
    for batch in 16 128; do
      steps=$((TOKENS / (batch * SEQ)))
      every=$((steps / 12))
      for wd in 0.01 0.5; do
        run="$OUT/$corpus-b$batch-wd$wd-s$seed"
        echo "$(date -u +%H:%M:%S) $run ($steps steps)"
        lmsat train --data "$data" --tokenizer "$tok" --eval-data "$eval" --hidden-sizes 8,32 --layers 2 --heads 4 \
          --seq-len $SEQ --batch-size $batch --steps $steps --warmup $((steps / 10)) --lr 3e-3 --weight-decay $wd \
          --checkpoint-every $every --eval-tokens 8192 --log-every 10 --seed $seed -o "$run" > "$run.log" 2>&1 \
          || echo "failed: $run (see $run.log)"
      done
    done
  done
done
echo "$(date -u +%H:%M:%S) grid done"
