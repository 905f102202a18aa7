"""The knee of the rank probe on a REAL trained model (issue 14 item 5).

A low-rank-logits language (`lmsat synth`) of rank R = 12 (not a power of two), V = C = 200, and a
model with d = 24 = 2R trained on it by `lmsat train` (1 layer, a few hundred steps). The default
rank probe (`--init svd`, the default budget) of that model, at ranks R - 4 ... R + 4: the loss falls
steeply up to R and flattens after it. Measured on the 2-core sandbox with the same recipe at
V = 300 and 400 steps: 4.445, 4.239, 4.091, 4.051, 4.031 at r = 8 .. 16 (full rank 4.024): the drop
from R - 2 to R is 3.7 times the drop from R to R + 2 and the curvature is largest at R.
"""

from __future__ import annotations

import pytest

from lmsat.experiments import rank_probe as rp
from lmsat.kinds.rank_probe import RankProbeRecord, RankProbeRefRecord
from lmsat.store import Store

pytestmark = pytest.mark.slow  # synth + train + probe: 482 s at load 11-12 on the 2-core sandbox

R, D, V = 12, 24, 200
LANGUAGE = ["--family", "low-rank-logits", "--vocab", V, "--contexts", V, "--rank", R, "-n", 120_000, "--heldout-tokens", 2048]
TRAIN = ["--hidden-sizes", D, "--layers", 1, "--heads", 2, "--seq-len", 32, "--batch-size", 32, "--steps", 300, "--lr", 3e-3,
         "--warmup", 30, "--checkpoint-every", 300, "--eval-tokens", 2048, "--device", "cpu"]
RANKS = [R - 4, R - 2, R, R + 2, R + 4]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    from lmsat.cli import main

    root = tmp_path_factory.mktemp("knee_trained")
    for args in (["synth", "-o", root / "lang", *LANGUAGE],
                 ["train", "--data", root / "lang" / "corpus", "--tokenizer", root / "lang" / "tokenizer", "-o", root / "runs", *TRAIN],
                 ["rank-probe", root / "runs" / f"gpt-neox-d{D}-l1" / "step300", "--data", root / "lang" / "corpus",
                  "--ranks", ",".join(map(str, RANKS)), "--device", "cpu", "-o", root / "probe"]):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None), args[0]
    store = Store(root / "probe")
    finals = {r.r: r for r in RankProbeRecord.load(store) if r.stage == "final"}
    full = next(r for r in RankProbeRefRecord.load(store) if r.stage == "final")
    own = next(r for r in RankProbeRefRecord.load(store) if r.head == "own")
    return finals, full, own


def test_default_svd_probe_of_a_trained_model_finds_the_knee_at_R(probe):
    finals, full, own = probe
    assert set(finals) == set(RANKS) and all(f.init == "svd" for f in finals.values())
    loss = {r: finals[r].loss for r in RANKS}
    drops = {r: loss[r - 2] - loss[r] for r in RANKS[1:]}  # what the two ranks below r add
    assert all(d > -0.01 for d in drops.values()), loss  # monotone (within noise)
    assert drops[R] > 2.5 * drops[R + 2], loss  # steep up to R, flat after it
    curvature = {r: drops[r] - drops[r + 2] for r in RANKS[1:-1]}
    assert max(curvature, key=curvature.get) == R, loss  # the knee is at R (not at a power of two)
    # the probe at full rank starts at (and stays within 0.02 nats of) the model's own head
    assert full.step0_loss == pytest.approx(own.loss, abs=5e-3) and full.loss <= own.loss + 0.02
