"""The diagnosis rules on records whose answers are known exactly (worked by hand in each test)."""

from __future__ import annotations

import numpy as np
import pytest

from lmsat.kinds.ngram import NgramRecord
from lmsat.report import diagnosis as dg
from lmsat.store import Store

# s^2 = 0.5, 0.3, 0.1, 0.05, 0.05 (|P|_F = 1): W-error(k) = sqrt(tail) = 1, .707, .447, .316, .224, 0
# so the dimension at W-error 0.5 is 2 and at 0.1 is 5.
S_SMALL = np.sqrt([0.5, 0.3, 0.1, 0.05, 0.05])
# The W-error curves lmsat ngram-rank stores, worked by hand: k = 0..5 for the whole spectrum, k = 0..3 for its top 3.
CURVE = np.sqrt([1.0, 0.5, 0.2, 0.1, 0.05, 0.0])
CURVE_TOP3 = CURVE[:4]


def ngram(store, key, inputs, results=None, curve=CURVE):
    return store.put("ngram", key, inputs, results or {}, arrays={"singular_values": S_SMALL[: len(curve) - 1], "w_error": curve})


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path)


def test_dimension_at_reads_the_w_error_curve(store):
    rec = NgramRecord.from_record(ngram(store, "c", {"corpus": "c"}))
    assert rec.dimension_at(0.5) == (2, True)
    assert rec.dimension_at(0.1) == (5, True)
    assert rec.w_error_at_dim(1) == pytest.approx(np.sqrt(0.5))
    # Only the top 3 values known, |P|_F = 1: W-error(3) = sqrt(0.1) > 0.1, so dim(0.1) is only "> 3".
    top = NgramRecord.from_record(ngram(store, "top", {"corpus": "c"}, {"frobenius_norm": 1.0}, CURVE_TOP3))
    assert top.dimension_at(0.5) == (2, True)
    assert top.dimension_at(0.1) == (3, False)


def test_stored_dimensions_take_precedence_over_the_curve(store):
    rec = NgramRecord.from_record(ngram(store, "c", {"corpus": "c"}, {"dims_for_w_error": {"0.5": 7, "0.1": 40}}))
    assert rec.dimension_at(0.5) == (7, True) and rec.dimension_at(0.1) == (40, True)


@pytest.mark.parametrize("d, status", [(1, dg.BINDING), (2, dg.PARTIAL), (4, dg.PARTIAL), (5, dg.NOT_BINDING), (9, dg.NOT_BINDING)])
def test_data_dimension_status_at_the_thresholds(store, d, status):
    rec = ngram(store, "c", {"corpus": "corpus.txt", "n": 3})
    (f,) = dg.data_dimension_findings(d, [rec], None)
    assert f.status == status
    assert f.numbers["data dimension at W-error 0.5"] == 2 and f.numbers["data dimension at W-error 0.1"] == 5


def test_unreached_threshold_counts_as_binding(store):
    rec = ngram(store, "top", {"corpus": "c"}, {"frobenius_norm": 1.0}, CURVE[:2])
    (f,) = dg.data_dimension_findings(3, [rec], None)  # W-error(1) = .707 > .5 and nothing beyond k = 1 is known
    assert f.status == dg.BINDING and f.numbers["data dimension at W-error 0.5"] == "> 1"


def test_sweep_finding_names_saturation_collapse_and_jump(store):
    steps, loss = [0, 1000, 2000, 4000, 8000], [7.0, 4.0, 3.6, 3.75, 3.96]
    ent, aniso = [0.5, 0.4, 0.3, 2.5, 2.6], [0.1, 0.2, 0.4, 0.5, 0.97]
    recs = [store.put("sweep", f"m@step{s}", {"model": "m", "revision": f"step{s}", "step": s},
                      {"status": "ok", "cross_entropy": lo, "singular_entropy": e, "last_layer_anisotropy": a, "hidden_size": 64})
            for s, lo, e, a in zip(steps, loss, ent, aniso)]
    # the report reads the stored saturation record (lmsat saturation's), never recomputes it
    missing = dg.sweep_finding("m", recs, None)
    assert "no saturation record" in missing.verdict and missing.numbers["best step"] is None
    from lmsat.experiments.saturation import run_saturation

    run_saturation(store.root)
    f = dg.sweep_finding("m", recs, store.get("saturation", "m"))
    n = f.numbers
    assert n["best step"] == 2000 and n["best loss (nats/token)"] == 3.6 and n["final loss (nats/token)"] == 3.96
    assert n["relative rise final/best - 1"] == pytest.approx(3.96 / 3.6 - 1)
    # lmsat saturation's jump rule: the first step after the last one below half the rise (lo + (max - lo) / 2).
    # Entropy: lo .3, max 2.6, half 1.45 -> last below is step 2000 -> jump at 4000, rise 2.3.
    assert n["spectrum-collapse step"] == 4000 and n["singular-entropy rise (nats)"] == pytest.approx(2.3)
    # Anisotropy: lo .1, max .97, half .535 -> last below is step 4000 -> jump at 8000, rise .87.
    assert n["last-layer anisotropy jump step"] == 8000 and n["anisotropy rise"] == pytest.approx(0.87)
    assert "saturates" in f.verdict and "coincides with the saturation point" in f.verdict
    assert not any("re-run `lmsat saturation" in c for c in f.caveats)
    # a checkpoint swept after the saturation record was written: the report says the record is stale
    recs.append(store.put("sweep", "m@step16000", {"model": "m", "revision": "step16000", "step": 16000},
                          {"status": "ok", "cross_entropy": 4.2, "singular_entropy": 2.6, "last_layer_anisotropy": 0.97, "hidden_size": 64}))
    stale = dg.sweep_finding("m", recs, store.get("saturation", "m"))
    assert any("computed from 5 checkpoint records; the sweep now has 6" in c for c in stale.caveats)


def test_sweep_finding_prefers_the_saturation_record_and_skips_failed_checkpoints(store):
    recs = [store.put("sweep", f"m@step{s}", {"model": "m", "revision": f"step{s}", "step": s},
                      {"status": "ok", "cross_entropy": 3.0 + s / 1000, "singular_entropy": 0.1, "last_layer_anisotropy": 0.1})
            for s in (0, 1000, 2000)]
    recs.append(store.put("sweep", "m@step3000", {"model": "m", "revision": "step3000", "step": 3000},
                          {"status": "failed", "cross_entropy": None}))
    assert dg.sweep_series(recs)["step"].tolist() == [0, 1000, 2000]
    sat = store.put("saturation", "m", {"model": "m"}, {"best_step": 1000, "best_loss": 2.5, "final_loss": 2.75,
                                                        "relative_rise": 0.1, "saturates": True, "collapse_step": 2000, "collapse_rise": 1.5})
    n = dg.sweep_finding("m", recs, sat).numbers
    assert n["best step"] == 1000 and n["relative rise final/best - 1"] == 0.1 and n["spectrum-collapse step"] == 2000


def test_rank_probe_gap_at_d_and_rank_needed(store):
    probes = [store.put("rank_probe", f"m|r={r}|final", {"model": "m", "hidden_size": 64, "rank": r}, {"stage": "final", "rank": r, "loss": lo})
              for r, lo in ((8, 5.0), (16, 4.2), (32, 4.02), (64, 4.001), (128, 4.0))]
    # a learning-rate search run is not a result, even with a low loss
    probes.append(store.put("rank_probe", "m|r=8|search", {"model": "m", "rank": 8}, {"stage": "search", "rank": 8, "loss": 1.0}))
    own = store.put("rank_probe_ref", "m|own-head", {"model": "m", "hidden_size": 64}, {"head": "own", "loss": 3.5})
    ref = store.put("rank_probe_ref", "m|full|final", {"model": "m", "hidden_size": 64}, {"head": "full-rank", "stage": "final", "loss": 3.99})
    assert dg.rank_probe_points(probes)[0] == (8, 5.0, None)
    f = dg.rank_probe_finding(64, probes, [own, ref])  # the trained full-rank head is the reference, not the own head
    assert f.numbers["loss of full-rank head"] == 3.99
    assert f.numbers["gap at r = 64 (nats)"] == pytest.approx(4.001 - 3.99)
    assert f.numbers["smallest rank within 0.05 nats of full rank"] == 32  # 4.02 - 3.99 = .03 <= .05; 4.2 - 3.99 > .05
    assert f.status == dg.NOT_BINDING
    g = dg.rank_probe_finding(16, probes, [ref])  # d = 16 < 32 needed
    assert g.status == dg.BINDING and g.numbers["gap at r = 16 (nats)"] == pytest.approx(4.2 - 3.99)


def test_known_rank_decides_the_overall_status(store):
    synth = store.put("synth", "lang", {"rank": 16}, {"rank": 16, "expected_entropy": 2.0})
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


def test_checkpoint_folders_are_their_model():
    assert dg.model_name({"model": "/runs/fam/gpt-neox-d64-l2/step400"}) == "gpt-neox-d64-l2"
    assert dg.model_name({"model": "EleutherAI/pythia-70m", "revision": "step1000"}) == "pythia-70m"
    assert dg.model_name({"model": "/x/smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}) == "SmolLM2-135M-Instruct.Q4_1"


def test_language_is_linked_by_the_training_corpus_path(tmp_path):
    lang = Store(tmp_path / "lang").put("synth", "language", {"rank": 8}, {"rank": 8})
    assert dg.trained_on(lang, [{"data": {"corpus": {"source": str(tmp_path / "lang" / "corpus")}}}])
    assert not dg.trained_on(lang, [{"data": {"corpus": {"source": str(tmp_path / "other" / "corpus")}}}])


def test_ngram_of_another_vocabulary_is_not_compared(store):
    ng = ngram(store, "c", {"corpus": {"source": "/d/lang/corpus"}, "tokenizer": {"vocab_size": 257, "fingerprint": "abc"}})
    assert dg.same_vocabulary(ng, 49152, None) is False
    assert dg.same_vocabulary(ng, 257, None) is True and dg.same_vocabulary(ng, 320, None) is True  # padded embedding
    assert dg.same_vocabulary(ng, 257, "zzz") is False and dg.same_vocabulary(ng, None, None) is None
    big = store.put("head", "big", {"model": "big", "hidden_size": 8}, {"singular_entropy": 0.1, "max_singular_entropy": 2.0, "head": {"vocab_rows": 49152}})
    small = store.put("head", "small", {"model": "small", "hidden_size": 8}, {"singular_entropy": 0.1, "max_singular_entropy": 2.0, "head": {"vocab_rows": 257}})
    diags = {m.model: m for m in dg.diagnose({"ngram": [ng], "head": [big, small]})}
    assert "data dimension" not in [f.topic for f in diags["big"].findings]
    assert any("another vocabulary" in c for c in diags["big"].caveats)
    assert [f.status for f in diags["small"].findings if f.topic == "data dimension"] == [dg.NOT_BINDING]  # d = 8 >= dim(0.1) = 5


def test_report_summary_groups_seeds_with_mean_sd_and_verdict_counts():
    import numpy as np
    import pandas as pd

    from lmsat.report.content import seed_summary_section

    rise = [0.012, 0.020, 0.031]
    summary = pd.DataFrame([{"model": f"fam-d8-seed{i}", "d": 8, "loss rise": r, "bottleneck": b}
                            for i, (r, b) in enumerate(zip(rise, ["binding", "binding", "not binding"]))]
                           + [{"model": "other", "d": 16, "loss rise": 0.5, "bottleneck": "binding"}])
    sec = seed_summary_section(summary)
    table = sec.tables[0].frame.set_index("model")
    row = table.loc["fam-d8"]
    assert row["runs (seeds)"] == 3 and row["seeds"] == "0,1,2"
    mean, sd = np.mean(rise), np.std(rise, ddof=1)
    assert row["loss rise (mean ± sd)"] == f"{mean:.3f} ± {sd:.3f}"
    assert row["bottleneck: binding"] == "2/3" and row["bottleneck: not binding"] == "1/3"
    assert table.loc["other", "runs (seeds)"] == 1
    assert seed_summary_section(summary[summary["model"] == "other"]) is None  # no seed groups, no section
