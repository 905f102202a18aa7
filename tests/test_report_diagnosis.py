"""The diagnosis rules on records whose answers are known exactly (worked by hand in each test)."""

from __future__ import annotations

import numpy as np
import pytest

from lmsat.report import diagnosis as dg
from lmsat.store import Store

# s^2 = 0.5, 0.3, 0.1, 0.05, 0.05 (|P|_F = 1): W-error(k) = sqrt(tail) = 1, .707, .447, .316, .224, 0
# so the dimension at W-error 0.5 is 2 and at 0.1 is 5.
S_SMALL = np.sqrt([0.5, 0.3, 0.1, 0.05, 0.05])


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path)


def test_dimension_at_reads_the_w_error_curve(store):
    rec = store.put("ngram", "c", {"corpus": "c"}, {}, arrays={"singular_values": S_SMALL})
    assert dg.dimension_at(rec, 0.5) == (2, True)
    assert dg.dimension_at(rec, 0.1) == (5, True)
    assert dg.w_error_at(rec, 1) == pytest.approx(np.sqrt(0.5))
    # Only the top 3 values known, |P|_F = 1: W-error(3) = sqrt(0.1) > 0.1, so dim(0.1) is only "> 3".
    top = store.put("ngram", "top", {"corpus": "c"}, {"frobenius_norm": 1.0}, arrays={"singular_values": S_SMALL[:3]})
    assert dg.dimension_at(top, 0.5) == (2, True)
    assert dg.dimension_at(top, 0.1) == (3, False)


def test_stored_dimensions_take_precedence_over_the_curve(store):
    rec = store.put("ngram", "c", {"corpus": "c"}, {"dimensions": {"0.5": 7, "0.1": 40}}, arrays={"singular_values": S_SMALL})
    assert dg.dimension_at(rec, 0.5) == (7, True) and dg.dimension_at(rec, 0.1) == (40, True)


@pytest.mark.parametrize("d, status", [(1, dg.BINDING), (2, dg.PARTIAL), (4, dg.PARTIAL), (5, dg.NOT_BINDING), (9, dg.NOT_BINDING)])
def test_data_dimension_status_at_the_thresholds(store, d, status):
    rec = store.put("ngram", "c", {"corpus": "corpus.txt", "n": 3}, {}, arrays={"singular_values": S_SMALL})
    (f,) = dg.data_dimension_findings(d, [rec], None)
    assert f.status == status
    assert f.numbers["data dimension at W-error 0.5"] == 2 and f.numbers["data dimension at W-error 0.1"] == 5


def test_unreached_threshold_counts_as_binding(store):
    rec = store.put("ngram", "top", {"corpus": "c"}, {"frobenius_norm": 1.0}, arrays={"singular_values": S_SMALL[:1]})
    (f,) = dg.data_dimension_findings(3, [rec], None)  # W-error(1) = .707 > .5 and nothing beyond k = 1 is known
    assert f.status == dg.BINDING and f.numbers["data dimension at W-error 0.5"] == "> 1"


def test_largest_jump_step():
    steps = np.array([0, 10, 20, 40, 80.0])
    assert dg.largest_jump_step(steps, np.array([1.0, 1.2, 0.9, 3.0, 3.1])) == (40.0, pytest.approx(2.1))
    assert dg.largest_jump_step(steps, np.array([1.0, np.nan, np.nan, np.nan, np.nan])) == (None, None)


def test_sweep_finding_names_saturation_collapse_and_jump(store):
    steps, loss = [0, 1000, 2000, 4000, 8000], [7.0, 4.0, 3.6, 3.75, 3.96]
    ent, aniso = [0.5, 0.4, 0.3, 2.5, 2.6], [0.1, 0.2, 0.4, 0.5, 0.97]
    recs = [store.put("sweep", f"m@step{s}", {"model": "m", "revision": f"step{s}", "hidden_size": 64},
                      {"cross_entropy": lo, "singular_entropy": e, "last_layer_anisotropy": a})
            for s, lo, e, a in zip(steps, loss, ent, aniso)]
    f = dg.sweep_finding("m", recs, None)
    n = f.numbers
    assert n["best step"] == 2000 and n["best loss (nats/token)"] == 3.6 and n["final loss (nats/token)"] == 3.96
    assert n["relative rise final/best - 1"] == pytest.approx(3.96 / 3.6 - 1)
    assert n["spectrum-collapse step"] == 4000 and n["singular-entropy rise there"] == pytest.approx(2.2)
    assert n["last-layer anisotropy jump step"] == 8000 and n["anisotropy rise there"] == pytest.approx(0.47)
    assert "saturates" in f.verdict and "coincides with the saturation point" in f.verdict


def test_rank_probe_gap_at_d_and_rank_needed(store):
    probes = [store.put("rank_probe", f"m r={r}", {"model": "m", "hidden_size": 64, "rank": r}, {"val_loss": lo})
              for r, lo in ((8, 5.0), (16, 4.2), (32, 4.02), (64, 4.001), (128, 4.0))]
    ref = store.put("rank_probe_ref", "m", {"model": "m", "hidden_size": 64}, {"val_loss": 3.99})
    f = dg.rank_probe_finding(64, probes, [ref])
    assert f.numbers["gap at r = 64 (nats)"] == pytest.approx(4.001 - 3.99)
    assert f.numbers["smallest rank within 0.05 nats of full rank"] == 32  # 4.02 - 3.99 = .03 <= .05; 4.2 - 3.99 > .05
    assert f.status == dg.NOT_BINDING
    g = dg.rank_probe_finding(16, probes, [ref])  # d = 16 < 32 needed
    assert g.status == dg.BINDING and g.numbers["gap at r = 16 (nats)"] == pytest.approx(4.2 - 3.99)


def test_known_rank_decides_the_overall_status(store):
    synth = store.put("synth", "lang", {"rank": 16}, {"rank": 16, "entropy": 2.0})
    assert dg.known_rank_finding(8, synth).status == dg.BINDING
    assert dg.known_rank_finding(16, synth).status == dg.NOT_BINDING
    train = store.put("train", "m", {"model": "runs/m", "hidden_size": 8, "synth": "lang"}, {})
    head = store.put("head", "runs/m", {"model": "runs/m", "hidden_size": 8}, {"singular_entropy": 0.1, "max_singular_entropy": float(np.log(8))})
    other = store.put("head", "other", {"model": "other", "hidden_size": 8}, {"singular_entropy": 0.1, "max_singular_entropy": float(np.log(8))})
    diags = {m.model: m for m in dg.diagnose({"synth": [synth], "train": [train], "head": [head, other]})}
    assert diags["m"].overall == dg.BINDING
    assert [f.topic for f in diags["m"].findings][0] == "known rank"
    assert "known rank" not in [f.topic for f in diags["other"].findings]  # not trained on the language


def test_head_spectrum_verdict_uses_the_entropy_ratio(store):
    ln = float(np.log(100))
    collapsed = store.put("head", "a", {"model": "a", "hidden_size": 100}, {"singular_entropy": 0.9 * ln, "max_singular_entropy": ln})
    spread = store.put("head", "b", {"model": "b", "hidden_size": 100}, {"singular_entropy": 0.1 * ln, "max_singular_entropy": ln})
    assert "collapsed" in dg.head_finding(collapsed).verdict and "90%" in dg.head_finding(collapsed).verdict
    assert "spread out" in dg.head_finding(spread).verdict


def test_caveats_for_quantized_and_instruction_tuned_models():
    gguf = dg.model_caveats({"model": "/x/smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    assert any("quantized" in c for c in gguf) and any("instruction-tuned" in c for c in gguf)
    assert dg.model_caveats({"model": "EleutherAI/pythia-160m", "revision": "step1000"}) == []
