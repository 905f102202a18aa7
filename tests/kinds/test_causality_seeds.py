"""Seeds as groups (lmsat.kinds.seeds): the one grouping function against numpy on hand-made records, and the
sweep / saturation / train tables and figures that use it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lmsat.kinds.seeds import curve_band, group_over_seeds, grouped_table, has_seed_groups, mean_sd_text, split_seed, spread
from lmsat.store import Store


def test_split_seed_names():
    assert split_seed("pythia-70m-seed3") == ("pythia-70m", "3")
    assert split_seed("pythia-70m") == ("pythia-70m", None)
    assert split_seed("gpt-neox-d32-l2-seed1-specreg1") == ("gpt-neox-d32-l2-specreg1", "1")
    assert split_seed("m-d8-seed1-weight-seed7") == ("m-d8", "1/7")
    assert split_seed("m-d8-data-seed2") == ("m-d8", "2")
    assert split_seed("seedling-seed12x") == ("seedling-seed12x", None)  # not a suffix
    assert has_seed_groups(["a", "a-seed1", "b"]) and not has_seed_groups(["a", "b-seed1"])


def test_group_over_seeds_matches_numpy_on_hand_made_records():
    rng = np.random.default_rng(3)
    rows, truth = [], {}
    for model, d, n in (("m8", 8, 3), ("m32", 32, 5), ("m64", 64, 1)):
        vals = rng.normal(4.0, 0.3, size=n)
        ranks = rng.uniform(2, d, size=n)
        truth[model] = (vals, ranks)
        rows += [{"model": model, "d": d, "seed": s, "loss": float(v), "rank": float(r)} for s, (v, r) in enumerate(zip(vals, ranks))]
    rows.append({"model": "m32", "d": 32, "seed": 9, "loss": math.nan, "rank": None})  # a seed with no values
    g = group_over_seeds(rows, ["model", "d"], ["loss", "rank"])
    assert list(g["model"]) == ["m8", "m32", "m64"] and list(g["n_seeds"]) == [3, 6, 1]
    assert g.loc[1, "seeds"] == "0,1,2,3,4,9"
    for _, row in g.iterrows():
        vals, ranks = truth[row["model"]]
        for col, x in (("loss", vals), ("rank", ranks)):
            assert row[f"{col}_n"] == len(x)
            assert row[f"{col}_mean"] == pytest.approx(np.mean(x))
            assert row[f"{col}_min"] == pytest.approx(np.min(x)) and row[f"{col}_max"] == pytest.approx(np.max(x))
            if len(x) > 1:
                assert row[f"{col}_sd"] == pytest.approx(np.std(x, ddof=1))
            else:
                assert math.isnan(row[f"{col}_sd"])
    assert spread([])["n"] == 0 and math.isnan(spread([None, "x", math.inf])["mean"])
    assert mean_sd_text(4.0, math.nan) == "4.000" and mean_sd_text(4.0, 0.25, 2) == "4.00 ± 0.25" and mean_sd_text(math.nan, 1) == ""


def test_curve_band_over_unequal_checkpoints():
    a = ([0, 10, 20, 30], [4.0, 3.0, 2.5, 2.6])
    b = ([0, 10, 20], [4.2, 3.4, 2.7])
    c = ([0, 20, 30], [3.8, 2.3, math.nan])
    band = curve_band([a, b, c])
    assert band["step"].tolist() == [0, 10, 20, 30]
    assert band["n"].tolist() == [3, 2, 3, 1]
    assert band["mean"] == pytest.approx([np.mean([4.0, 4.2, 3.8]), np.mean([3.0, 3.4]), np.mean([2.5, 2.7, 2.3]), 2.6])
    assert band["sd"][:3] == pytest.approx([np.std([4.0, 4.2, 3.8], ddof=1), np.std([3.0, 3.4], ddof=1), np.std([2.5, 2.7, 2.3], ddof=1)])
    assert band["min"][2] == pytest.approx(2.3) and band["max"][2] == pytest.approx(2.7) and math.isnan(band["sd"][3])


def test_grouped_table_shows_mean_sd_counts_and_shared_values():
    frame = pd.DataFrame({"name": ["p-70m", "p-70m-seed1", "p-70m-seed2", "p-14m"], "d": [512, 512, 512, 128],
                          "loss": [3.0, 3.2, 3.4, 4.0], "params": [70, 70, 70, 14], "sat": [True, False, True, None]})
    t = grouped_table(frame, "name", ["d"], ["loss", "params"], {"loss": "loss (nats)"}, digits=2, counts=["sat"])
    assert list(t["name"]) == ["p-70m", "p-14m"] and list(t["runs (seeds)"]) == [3, 1] and list(t["seeds"]) == ["0,1,2", "0"]
    assert t.loc[0, "loss (nats) (mean ± sd)"] == f"{3.2:.2f} ± {np.std([3.0, 3.2, 3.4], ddof=1):.2f}"
    assert t.loc[0, "params (mean ± sd)"] == "70" and t.loc[1, "loss (nats) (mean ± sd)"] == "4"
    assert list(t["sat"]) == ["2/3", ""]


STEPS = [0, 100, 200, 300, 400]


def _sweep(store: Store, model: str, loss: list[float], d: int = 64) -> None:
    for step, l in zip(STEPS, loss):
        store.put("sweep", f"{model}@step{step}",
                  {"model": model, "revision": f"step{step}", "step": step, "source": "hub", "tokens_per_step": 1000},
                  {"status": "ok", "cross_entropy": l, "singular_entropy": 0.1 * step / 100, "singular_entropy_linear": 0.05 * step / 100,
                   "effective_rank": 60.0 - step / 100, "last_layer_anisotropy": 0.2, "hidden_size": d, "n_params": 10_000,
                   "duplicate_of": None},
                  arrays={"singular_values": np.linspace(2.0, 1.0, d)})


def test_sweep_and_saturation_tables_and_figures_group_seeds(tmp_path):
    from lmsat.experiments.saturation import run_saturation
    from lmsat.figures.outputs import refresh_sweep
    from lmsat.figures.sweep import seed_groups
    from lmsat.kinds import saturation as saturation_kind
    from lmsat.kinds import sweep as sweep_kind
    from lmsat.kinds import typed

    run = tmp_path / "pp"
    store = Store(run)
    losses = {0: [5.0, 4.0, 3.5, 3.6, 3.7], 1: [5.2, 4.1, 3.4, 3.3, 3.3], 2: [5.1, 3.9, 3.6, 3.7, 3.9]}
    for seed, loss in losses.items():
        _sweep(store, "org/pythia-14m" + (f"-seed{seed}" if seed else ""), loss)
    _sweep(store, "org/other-70m", [5.0, 4.5, 4.0, 3.9, 3.8], d=128)
    sweeps = [typed(r) for r in store.records("sweep")]
    t = sweep_kind.table(sweeps)
    mine = t[t["name"] == "pythia-14m"]
    assert len(mine) == len(STEPS) and set(t["name"]) == {"pythia-14m", "other-70m"}
    col = "loss (nats/token) (mean ± sd)"
    for step, cell in zip(mine["step"], mine[col]):
        x = [losses[s][STEPS.index(step)] for s in losses]
        assert cell == (f"{np.mean(x):.3f} ± {np.std(x, ddof=1):.3f}" if np.ptp(x) else f"{x[0]:g}")
    frame = seed_groups(sweep_kind.frame(sweeps))
    g = frame[frame["model"] == "pythia-14m"]
    assert g["cross_entropy"].to_numpy() == pytest.approx(np.mean(list(losses.values()), axis=0))
    assert g["cross_entropy_min"].to_numpy() == pytest.approx(np.min(list(losses.values()), axis=0))
    assert all(len(k) == 3 for k in g["key"]) and (frame["model"] == "other-70m").sum() == len(STEPS)
    run_saturation(run)
    sat = saturation_kind.table([typed(r) for r in Store(run).records("saturation")])
    row = sat[sat["name"] == "pythia-14m"].iloc[0]
    rises = [loss[-1] / min(loss) - 1 for loss in losses.values()]
    assert row["saturates"] == f"{sum(r > 0.01 for r in rises)}/3" and row["runs (seeds)"] == 3
    assert row["relative rise final/best - 1 (mean ± sd)"] == f"{np.mean(rises):.3f} ± {np.std(rises, ddof=1):.3f}"
    figures = refresh_sweep(run)
    assert (run / "figures" / "fig1a_loss_vs_step.png").is_file() and figures is not None


def test_train_table_and_figures_group_seeds(tmp_path):
    """Hand-made train records: three seeds of one model and a model in another folder with other settings."""
    from lmsat.figures.training import _seed_groups, plot_head_over_training, plot_training_curves
    from lmsat.kinds import train as train_kind
    from lmsat.kinds import typed

    store = Store(tmp_path / "fam")
    finals = {0: 4.5, 1: 4.7, 2: 4.6}
    base_inputs = {"hidden_size": 8, "batch_size": 16, "lr": 0.003}
    for seed, final in finals.items():
        name = "m-d8" + (f"-seed{seed}" if seed else "")
        _train(store, name, {**base_inputs, "model": name, "seed": seed}, final)
    _train(store, "m-d8-b128", {**base_inputs, "model": "m-d8-b128", "seed": 0, "batch_size": 128}, 5.0)
    recs = store.records("train")
    t = train_kind.table([typed(r) for r in recs])
    row = t[t["model"] == "m-d8"].iloc[0]
    x = list(finals.values())
    assert row["runs (seeds)"] == 3 and row["seeds"] == "0,1,2"
    assert row["final held-out loss (nats/token) (mean ± sd)"] == f"{np.mean(x):.3f} ± {np.std(x, ddof=1):.3f}"
    assert t[t["model"] == "m-d8-b128"].iloc[0]["runs (seeds)"] == 1
    short = train_kind.summary_table([typed(r) for r in recs])  # what lmsat train prints keeps the grouped columns
    assert short.loc[short["model"] == "m-d8", "final loss (mean ± sd)"].iloc[0] == f"{np.mean(x):.3f} ± {np.std(x, ddof=1):.3f}"
    assert short.loc[short["model"] == "m-d8", "seeds"].iloc[0] == "0,1,2"
    assert [(b, len(m)) for b, m in _seed_groups(recs)] == [("m-d8", 3), ("m-d8-b128", 1)]
    assert plot_training_curves(recs, tmp_path / "loss.png").is_file()
    assert plot_head_over_training(recs, tmp_path / "head.png").is_file()


def _train(store: Store, name: str, inputs: dict, final: float) -> None:
    from lmsat.kinds.train import TrainRecord

    steps = np.array([0, 10, 20])
    loss = np.array([6.0, 5.0, final])
    sv = np.tile(np.linspace(2.0, 1.0, 8), (3, 1))
    TrainRecord(key=name, inputs=inputs, model_dir=name, hidden_size=8, n_params=1000, n_params_non_embedding=500, steps=20,
                tokens=5120, checkpoints=["step0", "step10", "step20"], final_train_loss=final, final_eval_loss=final,
                best_eval_loss=final, best_step=20, relative_rise=0.0, reference_entropy=None, final_gap=None,
                final_gap_standard_error=None, best_gap=None, final_last_layer_anisotropy=0.1, final_head_singular_entropy=0.1,
                final_head_effective_rank=7.5, wall_seconds=1.0, tokens_per_second=5000.0,
                ).put(store, arrays={"checkpoint_steps": steps, "eval_loss": loss, "gap": np.full(3, np.nan),
                                     "last_layer_anisotropy": np.array([0.0, 0.1, 0.1]), "head_singular_values": sv,
                                     "head_effective_rank": np.full(3, 7.5)})


def _linear_erank(s: np.ndarray) -> float:
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def test_causality_reports_kulkarni_linear_effective_rank(tmp_path, cli):
    """Sweep records storing singular_entropy_linear = ln d - H(s/Σs), and train records with spectra: the causality
    record's final rank fraction with p = s/Σs matches numpy, and its co-occurrence row uses --low-rank-linear."""
    d = 16
    spectra = {1: np.geomspace(1.0, 1e-3, d), 2: np.linspace(2.0, 1.0, d)}  # a steep head (low rank) and a flat one
    run = tmp_path / "pp"
    store = Store(run)
    for seed, s in spectra.items():
        q = s**2 / (s**2).sum()
        p = s / s.sum()
        for step, loss in zip(STEPS, [5.0, 4.0, 3.5, 3.6, 3.7]):
            model = f"org/pythia-14m-seed{seed}"
            store.put("sweep", f"{model}@step{step}", {"model": model, "revision": f"step{step}", "step": step, "source": "hub"},
                      {"status": "ok", "cross_entropy": loss, "singular_entropy": float(np.log(d) + (q * np.log(q)).sum()),
                       "singular_entropy_linear": float(np.log(d) + (p * np.log(p)).sum()),
                       "effective_rank": float(np.exp(-(q * np.log(q)).sum())), "last_layer_anisotropy": 0.1, "hidden_size": d,
                       "n_params": 1000, "duplicate_of": None})
    res = cli("causality", run, "--n-boot", 200, "--low-rank-linear", 0.6)
    assert res.code == 0, res.stderr
    rec = Store(run).records("causality")[0].results
    fractions = {r["seed"]: r["final_rank_fraction_linear"] for r in rec["runs"]}
    for seed, s in spectra.items():
        assert fractions[seed] == pytest.approx(_linear_erank(s) / d)
    assert _linear_erank(spectra[1]) / d < 0.6 < _linear_erank(spectra[2]) / d
    assert rec["cooccurrence"]["low_rank_linear"]["low_and_saturates"] == 1
    assert rec["cooccurrence"]["low_rank_linear"]["high_and_saturates"] == 1
    (group,) = rec["groups"]
    assert group["final_rank_fraction_linear_mean"] == pytest.approx(np.mean([_linear_erank(s) / d for s in spectra.values()]))
    assert group["final_rank_fraction_linear_sd"] == pytest.approx(np.std([_linear_erank(s) / d for s in spectra.values()], ddof=1))
    assert (run / "figures" / "causality.png").is_file() and "Kulkarni" in res.stdout
    # train records: the linear rank from the stored spectra
    fam = tmp_path / "fam"
    _train(Store(fam), "m-d8", {"model": "m-d8", "seed": 0, "hidden_size": 8}, 4.5)
    res = cli("causality", fam, "--n-boot", 200)
    assert res.code == 0, res.stderr
    (row,) = Store(fam).records("causality")[0].results["runs"]
    assert row["final_rank_fraction_linear"] == pytest.approx(_linear_erank(np.linspace(2.0, 1.0, 8)) / 8)
    bad = cli("causality", fam, "--low-rank-linear", 1.5)
    assert bad.code == 2 and "--low-rank-linear" in bad.stderr
