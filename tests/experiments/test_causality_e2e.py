"""lmsat causality end to end: hand-made PolyPythias-style sweep records with known onsets, and three
seeds of a tiny trained family -> causality -> the report's causality section."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lmsat.store import Store

STEPS = [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000]


def _sweep_model(store: Store, model: str, loss: list[float], entropy: list[float], erank: list[float], d: int = 128) -> None:
    for step, l, e, r in zip(STEPS, loss, entropy, erank):
        store.put("sweep", f"{model}@step{step}",
                  {"model": model, "revision": f"step{step}", "step": step, "source": "hub", "tokens_per_step": 2_097_152},
                  {"status": "ok", "cross_entropy": l, "singular_entropy": e, "effective_rank": r, "last_layer_anisotropy": 0.1,
                   "hidden_size": d, "n_params": 14_000_000, "duplicate_of": None})


def test_polypythias_style_records_give_the_known_lead_and_table(tmp_path, cli):
    """Three seeds of one size: the loss rises from step 5000 (onset 6000 by the rule) in seeds 1 and 2, the head
    collapses at 3000 (seed 1) and 4000 (seed 2); seed 3 collapses at 2000 and never rises. Known: lags 3000 and
    2000, preceding in 2 of 2, co-occurrence low&sat 2, low&no-rise 1."""
    run = tmp_path / "pp"
    store = Store(run)
    fall = [4.0, 3.5, 3.2, 3.1, 3.0, 3.0, 3.2, 3.3, 3.4]  # best at 4000-5000 (first: 4000), rise 0.4 = 13% > 1%
    flat = [4.0, 3.5, 3.2, 3.1, 3.0, 2.95, 2.9, 2.85, 2.8]
    for seed, loss, collapse in ((1, fall, 3000), (2, fall, 4000), (3, flat, 2000)):
        ent = [0.3 if s < collapse else 4.0 for s in STEPS]
        rank = [100.0 if s < collapse else 20.0 for s in STEPS]
        _sweep_model(store, f"EleutherAI/pythia-14m-seed{seed}", loss, ent, rank)
    res = cli("causality", run, "--n-boot", 2000)
    assert res.code == 0, res.stderr
    rec = Store(run).records("causality")[0].results
    runs = {r["seed"]: r for r in rec["runs"]}
    assert set(runs) == {1, 2, 3} and {r["group"] for r in rec["runs"]} == {"pythia-14m"}
    # loss 3.0 at 4000 is the best; max 3.4 at 8000; half level 3.2: the last value below is 3.0 at 5000 -> onset 6000
    assert runs[1]["loss_onset"] == runs[2]["loss_onset"] == 6000 and runs[3]["loss_onset"] is None
    assert [runs[s]["rank_onset"] for s in (1, 2, 3)] == [3000, 4000, 2000]
    assert [runs[s]["entropy_onset"] for s in (1, 2, 3)] == [3000, 4000, 2000]
    rank_lag = next(ll for ll in rec["lead_lag"] if ll["sign"] == "rank")
    assert rank_lag["n_both"] == 2 and rank_lag["lag_mean"] == pytest.approx(2500.0) and rank_lag["precedes"] == 1.0
    assert rank_lag["n_sign_only"] == 1 and rank_lag["n_rise_only"] == 0
    assert 2000 <= rank_lag["lag_low"] <= rank_lag["lag_high"] <= 3000
    assert rec["cooccurrence"]["low_rank"] == {"low_and_saturates": 2, "low_no_saturation": 1, "high_and_saturates": 0,
                                              "high_no_saturation": 0, "unknown": 0}
    (group,) = rec["groups"]
    assert group["n_seeds"] == 3 and group["saturating"] == "2/3"
    assert group["final_rank_fraction_mean"] == pytest.approx(20.0 / 128)
    assert "low rank is not sufficient" in " ".join(rec["verdict"])
    assert "Co-occurrence" in res.stdout and (run / "causality_groups.csv").is_file() and (run / "figures" / "causality.png").is_file()


def test_causality_errors_are_one_line(tmp_path, cli):
    res = cli("causality", tmp_path / "missing")
    assert res.code == 2 and res.stderr.startswith("lmsat: error:") and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    res = cli("causality", tmp_path / "empty")
    assert res.code == 2 and "no sweep or train records" in res.stderr
    assert not (tmp_path / "empty" / "causality").exists()
    res = cli("causality", tmp_path / "empty", "--rank-drop", "2")
    assert res.code == 2 and "--rank-drop" in res.stderr


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    """A tiny synthetic language and one model (d = 8) trained with --seeds 0,1,2 in one folder (seconds)."""
    from lmsat.cli import main

    root = tmp_path_factory.mktemp("causality_e2e")

    def run(*args: object) -> None:
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None)

    run("synth", "-o", root / "lang", "--vocab", 32, "--contexts", 32, "--rank", 4, "-n", 8192, "--heldout-tokens", 2048)
    out = root / "seeds"
    run("train", "--data", root / "lang" / "corpus", "--tokenizer", root / "lang" / "tokenizer", "--hidden-sizes", 8,
        "--layers", 1, "--heads", 2, "--seq-len", 16, "--steps", 24, "--batch-size", 8, "--warmup", 2,
        "--checkpoint-every", 8, "--eval-tokens", 256, "--seeds", "0,1,2", "-o", out)
    return root, out


def test_train_seeds_name_the_models_and_split_weights_from_batch_order(three_seeds, cli):
    from lmsat.training.config import TrainConfig
    from lmsat.training.data import batch_indices
    from lmsat.training.model import build_model

    root, out = three_seeds
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("gpt-neox")) == [
        "gpt-neox-d8-l1", "gpt-neox-d8-l1-seed1", "gpt-neox-d8-l1-seed2"]
    seeds = {r.key: r.inputs["seed"] for r in Store(out).records("train")}
    assert seeds == {"gpt-neox-d8-l1": 0, "gpt-neox-d8-l1-seed1": 1, "gpt-neox-d8-l1-seed2": 2}
    base = TrainConfig(hidden_size=8, layers=1, heads=2)
    a, b = TrainConfig(**{**base.settings(), "seed": 1, "weight_seed": 7}), TrainConfig(**{**base.settings(), "seed": 2, "weight_seed": 7})
    assert (a.init_seed, a.order_seed, a.model_name) == (7, 1, "gpt-neox-d8-l1-seed1-weight-seed7")
    wa, wb = build_model(a, 40, 39).state_dict(), build_model(b, 40, 39).state_dict()
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)  # same weight seed: same initial weights
    assert not np.array_equal(batch_indices(3, 8, 100, a.order_seed), batch_indices(3, 8, 100, b.order_seed))
    c = TrainConfig(**{**base.settings(), "seed": 1, "data_seed": 1})
    wc = build_model(c, 40, 39).state_dict()
    assert not all(np.array_equal(wa[k].numpy(), wc[k].numpy()) for k in wa) and c.order_seed == a.order_seed
    res = cli("train", "--data", root / "lang" / "corpus", "--tokenizer", root / "lang" / "tokenizer", "--seed", 3, "--seeds", "0,1",
              "-o", root / "bad")
    assert res.code == 2 and "--seeds" in res.stderr and not (root / "bad").exists()


def test_three_seeds_then_causality_then_report(three_seeds, cli):
    root, run_dir = three_seeds
    out = root / "analysis"
    res = cli("causality", run_dir, "-o", out, "--n-boot", 1000)
    assert res.code == 0, res.stderr
    rec = Store(out).records("causality")[0].results
    assert len(rec["runs"]) == 3 and [r["seed"] for r in rec["runs"]] == [0, 1, 2]
    (group,) = rec["groups"]
    assert group["n_seeds"] == 3 and group["seeds"] == "0,1,2"
    # independent check of each run's numbers against its own stored train record
    trains = {r.inputs["seed"]: r for r in Store(run_dir).records("train")}
    for row in rec["runs"]:
        train = trains[row["seed"]]
        a = train.load_arrays()
        steps, loss = a["checkpoint_steps"], a["eval_loss"]
        assert row["best_step"] == int(steps[int(np.argmin(loss))])
        assert row["relative_rise"] == pytest.approx(loss[-1] / loss.min() - 1)
        s2 = a["head_singular_values"] ** 2
        p = s2 / s2.sum(axis=1, keepdims=True)
        erank = np.exp(-(p * np.log(np.where(p > 0, p, 1))).sum(axis=1))
        assert row["final_rank_fraction"] == pytest.approx(erank[-1] / 8)
        assert row["r"] == pytest.approx(np.corrcoef(erank, loss)[0, 1])
        assert row["r_detrended"] == pytest.approx(np.corrcoef(np.diff(erank), np.diff(loss))[0, 1])
    vals = [r["relative_rise"] for r in rec["runs"]]
    assert group["relative_rise_mean"] == pytest.approx(np.mean(vals))
    assert group["relative_rise_sd"] == pytest.approx(np.std(vals, ddof=1))
    rep = cli("report", out, "-o", root / "report.md")
    assert rep.code == 0, rep.stderr
    text = (root / "report.md").read_text()
    assert "## Causality: head collapse and loss rise across seeds" in text and "gpt-neox-d8-l1" in text
    groups_csv = pd.read_csv(root / "report_files" / "causality_groups.csv")
    assert groups_csv.loc[0, "seeds"] == 3 and not math.isnan(float(len(groups_csv)))


def test_sweep_of_trained_seeds_records_each_seed_and_causality_groups_them(three_seeds, cli):
    root, run_dir = three_seeds
    sw = root / "sweep"
    res = cli("sweep", run_dir, "--data", root / "lang" / "heldout", "--revisions", "every:8", "-n", 256, "--seq-len", 16,
              "--device", "cpu", "--no-prefetch", "-o", sw)
    assert res.code == 0, res.stderr
    seeds = {(r.inputs["model"].rsplit("/", 1)[-1], r.inputs["model_seed"]) for r in Store(sw).records("sweep")}
    assert seeds == {("gpt-neox-d8-l1", 0), ("gpt-neox-d8-l1-seed1", 1), ("gpt-neox-d8-l1-seed2", 2)}
    res = cli("causality", sw, "--n-boot", 500)
    assert res.code == 0, res.stderr
    rec = Store(sw).records("causality")[0].results
    assert [(r["group"], r["seed"], r["n_checkpoints"]) for r in rec["runs"]] == [
        ("gpt-neox-d8-l1", 0, 4), ("gpt-neox-d8-l1", 1, 4), ("gpt-neox-d8-l1", 2, 4)]
