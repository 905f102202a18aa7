"""`lmsat saturation` and `lmsat scaling-fit` on stored sweep records with known answers (no model loaded)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tests.conftest import files_under
from lmsat.experiments.saturation import checkpoint_table, jump_step, saturation_point, saturation_table
from lmsat.experiments.scaling import STUDY_A, STUDY_ALPHA, chinchilla_loss
from lmsat.store import Store

TPS = 2_097_152


def test_saturation_point_known_answer():
    steps = [4000, 0, 1000, 2000, 3000]
    losses = [3.3, 6.0, 3.5, 3.0, 3.0]  # unsorted on purpose; tie at 3.0: the earliest wins
    assert saturation_point(steps, losses) == {
        "best_step": 2000, "best_loss": 3.0, "final_step": 4000, "final_loss": 3.3, "relative_rise": pytest.approx(0.1),
    }


def test_jump_step_finds_the_collapse_not_an_early_transient():
    steps = np.arange(0, 100_001, 2000)
    collapse = 0.3 + 4.4 / (1 + np.exp(-(steps - 60_000) / 1500))  # 0.3 -> 4.7 around step 60k
    transient = np.where((steps > 0) & (steps <= 6000), 2.9, 0.0)  # early hump above the half level, then back
    values = collapse + transient
    step, rise = jump_step(steps, values, min_rise=1.0)
    half = values[: int(np.argmax(values)) + 1].min() + rise / 2
    assert step == 60_000 and values[steps == 58_000][0] < half <= values[steps == 60_000][0]
    assert rise == pytest.approx(values.max() - values.min())
    # a flat-ish curve (Pythia-410m's entropy stays ~0.4-0.6) has no collapse
    assert jump_step(steps, 0.5 + 0.1 * np.sin(steps / 7000), min_rise=1.0)[0] is None
    # checkpoints before from_step are ignored; NaNs are skipped
    assert jump_step(steps, values, min_rise=1.0, from_step=61_000) == (None, pytest.approx(values[steps >= 61_000].max() - values[steps >= 61_000].min()))
    with_nan = values.copy()
    with_nan[3] = np.nan
    assert jump_step(steps, with_nan, min_rise=1.0)[0] == 60_000


def law(n: float, step: int) -> float:
    return float(chinchilla_loss(n, step * TPS, STUDY_A, STUDY_ALPHA))


MODELS = {  # name: (d, N, final rise above the law); 410m/1b/1.4b follow the law, the small ones saturate
    "EleutherAI/pythia-14m": (128, 14_067_712, 0.10),
    "EleutherAI/pythia-70m": (512, 70_426_624, 0.06),
    "EleutherAI/pythia-410m": (1024, 405_334_016, 0.0),
    "EleutherAI/pythia-1b": (2048, 1_011_781_632, 0.0),
    "EleutherAI/pythia-1.4b": (2048, 1_414_647_808, 0.0),
}
STEPS = [1000, 20_000, 40_000, 60_000, 80_000, 100_000, 120_000, 143_000]


def put(store: Store, model: str, step: int, loss: float | None, d: int, n: int, entropy: float, aniso: float,
        status: str = "ok", duplicate_of: str | None = None, tps: int | None = TPS) -> None:
    s = np.exp(-entropy * np.arange(d) / d)
    store.put(
        "sweep", f"{model}@step{step}",
        {"model": model, "revision": f"step{step}", "step": step, "source": "hub", "path": None, "dtype": "float32",
         "device": "cpu", "token_sample": {"hash": "x"}, "tokens_per_step": tps, "lmsat_version": "test"},
        {"status": status, "error": None if status == "ok" else "boom", "cross_entropy": loss, "last_layer_anisotropy": aniso,
         "singular_entropy": entropy, "singular_entropy_linear": entropy / 2, "effective_rank": 1.0, "hidden_size": d,
         "n_params": n, "head_hash": f"h{model}{step}", "weights_hash": f"w{model}{step}", "duplicate_of": duplicate_of,
         "wall_time_s": 1.0},
        arrays={"singular_values": s} if status == "ok" else None,
    )


@pytest.fixture
def run_dir(tmp_path):
    """Sweep records of five models: the small ones rise over the law after step 60k, with a spectrum
    collapse and an anisotropy jump at step 80k; plus one failed and one duplicate checkpoint."""
    store = Store(tmp_path / "run")
    for model, (d, n, rise) in MODELS.items():
        for step in STEPS:
            late = rise > 0 and step >= 80_000
            factor = 1 + rise * (step - 60_000) / (143_000 - 60_000) if rise > 0 and step > 60_000 else 1.0
            put(store, model, step, law(n, step) * factor, d, n, entropy=4.7 if late else 0.3, aniso=0.99 if late else 0.4)
    put(store, "EleutherAI/pythia-14m", 150_000, None, 128, 14_067_712, 0.3, 0.4, status="failed")
    put(store, "EleutherAI/pythia-70m", 143_500, 0.5, 512, 70_426_624, 0.3, 0.4, duplicate_of="EleutherAI/pythia-70m@step1000")
    return tmp_path / "run"


def test_saturation_table_of_known_curves(run_dir):
    frame = checkpoint_table(Store(run_dir).records("sweep"))
    assert list(dict.fromkeys(frame["name"])) == ["pythia-14m", "pythia-70m", "pythia-410m", "pythia-1b", "pythia-1.4b"]
    assert frame.loc[frame["key"] == "EleutherAI/pythia-70m@step1000", "tokens_seen"].item() == 1000 * TPS
    sat = saturation_table(frame).set_index("name")
    small = sat.loc["pythia-14m"]
    assert small["best_step"] == 60_000 and small["final_step"] == 143_000  # the failed step150000 is left out
    assert small["relative_rise"] == pytest.approx(law(14_067_712, 143_000) * 1.10 / law(14_067_712, 60_000) - 1, rel=1e-12)
    assert bool(small["saturates"]) and small["n_failed"] == 1 and small["n_checkpoints"] == 9
    assert small["collapse_step"] == 80_000 and small["anisotropy_jump_step"] == 80_000
    assert small["collapse_rise"] == pytest.approx(4.4)
    seventy = sat.loc["pythia-70m"]
    assert seventy["n_duplicates"] == 1 and seventy["final_step"] == 143_000  # the duplicate (loss 0.5) is no point
    for big in ("pythia-410m", "pythia-1b", "pythia-1.4b"):
        row = sat.loc[big]
        assert row["best_step"] == 143_000 and row["relative_rise"] == 0.0 and not bool(row["saturates"])
        assert pd.isna(row["collapse_step"]) and pd.isna(row["anisotropy_jump_step"])


def test_saturation_and_scaling_fit_commands_on_stored_records(cli, run_dir):
    res = cli("saturation", run_dir)
    assert res.code == 0, res.stderr
    sat = pd.read_csv(run_dir / "saturation.csv").set_index("name")
    assert sat.loc["pythia-14m", "collapse_step"] == 80_000
    rec = Store(run_dir).get("saturation", "EleutherAI/pythia-14m")  # read by its key (file names are the store's)
    assert rec.results["best_step"] == 60_000 and rec.inputs["max_rise"] == 0.01
    assert len(pd.read_csv(run_dir / "sweep.csv")) == 42
    assert len(list((run_dir / "figures").glob("fig*.png"))) == 5

    res = cli("scaling-fit", run_dir)
    assert res.code == 0, res.stderr
    fit = Store(run_dir).get("scaling_fit", "fit").results
    # default: fitted on the three models that do not saturate, whose final losses lie on the law
    assert fit["fitted_models"] == ["EleutherAI/pythia-410m", "EleutherAI/pythia-1b", "EleutherAI/pythia-1.4b"]
    assert fit["A"] == pytest.approx(STUDY_A, rel=1e-6) and fit["alpha"] == pytest.approx(STUDY_ALPHA, abs=1e-8)
    table = pd.read_csv(run_dir / "scaling_fit.csv").set_index("name")
    # final checkpoints sit exactly 10% / 6% above the law; best ones (step 60k) exactly on it
    assert table.loc["pythia-14m", "final_underperformance"] == pytest.approx(0.10, abs=1e-9)
    assert table.loc["pythia-70m", "final_underperformance"] == pytest.approx(0.06, abs=1e-9)
    assert table.loc["pythia-14m", "best_underperformance"] == pytest.approx(0.0, abs=1e-9)
    assert fit["mean_final_underperformance"] == pytest.approx(0.08, abs=1e-9)
    assert fit["mean_best_underperformance"] == pytest.approx(0.0, abs=1e-9)
    assert table.loc["pythia-410m", "final_compute"] == pytest.approx(6 * 405_334_016 * 143_000 * TPS)
    assert "A = 119.1" in res.stdout and "+8.0%" in res.stdout
    assert (run_dir / "figures" / "fig1b_loss_vs_compute.png").stat().st_size > 10_000

    # explicit models and parameter counts: doubling every N changes A by 2^alpha, not alpha
    big = ["pythia-410m", "pythia-1b", "pythia-1.4b"]
    params = [f"{m}={2 * MODELS['EleutherAI/' + m][1]}" for m in big]
    res = cli("scaling-fit", run_dir, "--models", ",".join(big), *sum((["--params", p] for p in params), []))
    assert res.code == 0, res.stderr
    fit2 = Store(run_dir).get("scaling_fit", "fit").results
    assert fit2["alpha"] == pytest.approx(STUDY_ALPHA, abs=1e-8)
    assert fit2["A"] == pytest.approx(STUDY_A * 2**STUDY_ALPHA, rel=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "pythia-999m"], "--models names 'pythia-999m'"),
        (["--models", "pythia-410m"], "needs at least two models"),
        (["--params", "gpt2=5"], "--params names 'gpt2'"),
        (["--tokens-per-step", "pythia-1b=0"], "positive whole number"),
        (["--max-rise", "-1"], "--max-rise must be >= 0"),
    ],
)
def test_bad_scaling_fit_input_exits_2_and_writes_nothing(cli, run_dir, args, message):
    before = files_under(run_dir)
    res = cli("scaling-fit", run_dir, *args)
    assert res.code == 2 and len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
    assert files_under(run_dir) == before


def test_unknown_tokens_per_step_asks_for_the_option(cli, tmp_path):
    store = Store(tmp_path / "run")
    for name, n in (("org/a", 1e8), ("org/b", 4e8)):
        for step in (100, 200):
            put(store, name, step, 3.0 + 1e7 / n, 64, int(n), 0.3, 0.3, tps=None)
    res = cli("scaling-fit", tmp_path / "run")
    assert res.code == 2 and "pass --tokens-per-step a=N" in res.stderr
    res = cli("scaling-fit", tmp_path / "run", "--tokens-per-step", "1_000_000")
    assert res.code == 0, res.stderr
    assert math.isfinite(Store(tmp_path / "run").get("scaling_fit", "fit").results["A"])
