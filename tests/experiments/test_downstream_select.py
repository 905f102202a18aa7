"""Best vs final selection from a sweep store, the harness-result parser and the Table 1 comparison (no model needed)."""

from __future__ import annotations

import pytest

from lmsat.errors import UserError
from lmsat.experiments import downstream as ds
from lmsat.kinds.downstream import DownstreamRecord
from lmsat.store import Store


def _sweep(store: Store, model: str, step: int, loss: float | None, status: str = "ok", source: str = "hub", **extra) -> None:
    rev = f"step{step}"
    path = f"/ckpts/{model}/{rev}" if source == "local" else None
    store.put("sweep", f"{model}@{rev}", {"model": model, "revision": rev, "step": step, "source": source, "path": path},
              {"status": status, "cross_entropy": loss, **extra})


def test_best_is_min_loss_final_is_max_step_and_failed_records_are_ignored(tmp_path):
    store = Store(tmp_path)
    losses = {0: 10.8, 1000: 4.1, 64000: 3.52, 100000: 3.49, 120000: 3.51, 143000: 3.61}
    for step, loss in losses.items():
        _sweep(store, "EleutherAI/pythia-160m", step, loss)
    _sweep(store, "EleutherAI/pythia-160m", 80000, 0.5, status="failed")  # lowest loss, but failed
    _sweep(store, "EleutherAI/pythia-160m", 90000, float("nan"), status="ok")  # not finite
    _sweep(store, "EleutherAI/pythia-160m", 110000, 3.0, duplicate_of="EleutherAI/pythia-160m@step1000")  # wrong weights
    # A local model whose largest step failed: final is the largest step measured without failure.
    for step, loss in {0: 9.0, 10: 5.0, 20: 5.5}.items():
        _sweep(store, "runs/tiny", step, loss, source="local")
    _sweep(store, "runs/tiny", 30, None, status="failed", source="local")
    # A model with no successful checkpoint is left out.
    _sweep(store, "broken", 5, None, status="failed")

    sel = {s.model: s for s in ds.sweep_selection(tmp_path)}
    assert set(sel) == {"EleutherAI/pythia-160m", "runs/tiny"}
    pythia = sel["EleutherAI/pythia-160m"]
    ok = {s: v for s, v in losses.items()}
    assert pythia.best.step == min(ok, key=ok.get) == 100000
    assert pythia.final.step == max(ok) == 143000
    assert pythia.best_loss == 3.49 and pythia.final_loss == 3.61
    assert pythia.best.revision == "step100000" and pythia.best.source == "hub" and pythia.best.load_revision == "step100000"
    assert any("failed" in n for n in pythia.notes) and any("step1000" in n for n in pythia.notes)
    tiny = sel["runs/tiny"]
    assert (tiny.best.step, tiny.final.step) == (10, 20)
    assert tiny.best.load_name == "/ckpts/runs/tiny/step10" and tiny.best.load_revision is None
    assert any("step 30" in n for n in tiny.notes)
    assert [c.step for c in tiny.checkpoints] == [10, 20]


def test_model_filter_and_a_model_that_did_not_saturate(tmp_path):
    store = Store(tmp_path)
    for step, loss in {0: 9.0, 100: 4.0, 200: 3.0}.items():
        _sweep(store, "a", step, loss)
        _sweep(store, "b", step, 10 - loss)
    sel = ds.sweep_selection(tmp_path, ["a"])
    assert [s.model for s in sel] == ["a"]
    assert sel[0].same and len(sel[0].checkpoints) == 1  # best is final: evaluated once
    with pytest.raises(UserError, match="'c' is not in the sweep"):
        ds.sweep_selection(tmp_path, ["c"])


def test_ties_pick_the_earlier_step(tmp_path):
    store = Store(tmp_path)
    for step in (300, 100, 200):
        _sweep(store, "m", step, 2.0)
    assert ds.sweep_selection(tmp_path)[0].best.step == 100


def test_empty_or_all_failed_sweeps_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ds.sweep_selection(tmp_path / "nope")
    with pytest.raises(UserError, match="no sweep records"):
        ds.sweep_selection(tmp_path)
    _sweep(Store(tmp_path), "m", 1, None, status="failed")
    with pytest.raises(UserError, match="no checkpoint of m was measured successfully"):
        ds.sweep_selection(tmp_path)


def test_explicit_hub_revisions():
    sel = ds.explicit_selection("EleutherAI/pythia-160m", "step100000, step143000")
    assert (sel.best.revision, sel.best.step, sel.final.step, sel.best.source) == ("step100000", 100000, 143000, "hub")
    assert sel.best.key == "EleutherAI/pythia-160m@step100000"
    for bad in ("step1", "a,b,c", "step1,step1"):
        with pytest.raises(UserError):
            ds.explicit_selection("EleutherAI/pythia-160m", bad)


def test_metrics_of_reads_the_harness_result_keys():
    results = {
        "results": {
            "lambada_openai": {"alias": "lambada_openai", "perplexity,none": 24.6, "perplexity_stderr,none": 0.9,
                               "acc,none": 0.403, "acc_stderr,none": 0.0068},
            "gsm8k": {"exact_match,strict-match": 0.1, "exact_match_stderr,strict-match": "N/A"},
        },
        "higher_is_better": {"lambada_openai": {"perplexity": False, "acc": True}, "gsm8k": {"exact_match": True}},
        "n-samples": {"lambada_openai": {"original": 5153, "effective": 5153}, "gsm8k": {"original": 1319, "effective": 10}},
    }
    got = ds.metrics_of(results)
    assert got["lambada_openai"] == {"metrics": {"perplexity": 24.6, "acc": 0.403}, "stderr": {"perplexity": 0.9, "acc": 0.0068},
                                     "higher_is_better": {"perplexity": False, "acc": True}, "n_samples": 5153}
    assert got["gsm8k"] == {"metrics": {"exact_match,strict-match": 0.1}, "stderr": {"exact_match,strict-match": None},
                            "higher_is_better": {"exact_match,strict-match": True}, "n_samples": 10}


def _record(key: str, tasks: dict, hib: dict) -> DownstreamRecord:
    return DownstreamRecord(key=key, tasks=tasks, higher_is_better=hib, stderr={})


def test_comparison_rows_put_best_and_final_side_by_side_in_study_units():
    sel = ds.explicit_selection("EleutherAI/pythia-160m", "step100000,step143000")
    hib = {"lambada_openai": {"perplexity": False, "acc": True}, "sciq": {"acc": True, "acc_norm": True}}
    best = _record("b", {"lambada_openai": {"acc": 0.403, "perplexity": 24.6}, "sciq": {"acc": 0.796, "acc_norm": 0.7}}, hib)
    final = _record("f", {"lambada_openai": {"acc": 0.380, "perplexity": 32.9}, "sciq": {"acc": 0.734, "acc_norm": 0.7}}, hib)
    rows = ds.comparison_rows(sel, best, final)
    # Study metrics first (perplexity before acc for LAMBADA), then the task's others.
    assert [(r["task"], r["metric"]) for r in rows] == [("lambada_openai", "perplexity"), ("lambada_openai", "acc"),
                                                         ("sciq", "acc"), ("sciq", "acc_norm")]
    ppl, acc, sciq, norm = rows
    assert (ppl["best"], ppl["final"], ppl["unit"]) == (24.6, 32.9, "")
    assert ppl["difference"] == pytest.approx(8.3) and ppl["relative_change"] == pytest.approx(32.9 / 24.6 - 1)
    assert ppl["worse_at_final"] is True  # perplexity went up
    assert (acc["best"], acc["final"], acc["unit"]) == (pytest.approx(40.3), pytest.approx(38.0), "%")
    assert acc["difference"] == pytest.approx(-2.3) and acc["worse_at_final"] is True
    assert (ppl["study_best"], ppl["study_final"], acc["study_best"], sciq["study_final"]) == (24.6, 32.9, 40.3, 73.4)
    assert norm["worse_at_final"] is None and norm["study_best"] is None  # unchanged; not in the study's table
    assert ppl["best_revision"] == "step100000" and ppl["final_step"] == 143000


def test_limit_and_task_list_parsing():
    from lmsat.cli.parse import parse_limit

    assert parse_limit(None) is None
    assert parse_limit("100") == 100 and isinstance(parse_limit("100"), int)
    assert parse_limit("0.25") == 0.25
    for bad in ("0", "-1", "abc", "1.5", "nan"):
        with pytest.raises(UserError):
            parse_limit(bad)
    assert ds.split_tasks(None) == list(ds.STUDY_TASKS)
    assert ds.split_tasks(" sciq , arc_easy ") == ["sciq", "arc_easy"]
    for bad in (",", "sciq,sciq"):
        with pytest.raises(UserError):
            ds.split_tasks(bad)


def test_default_tasks_leave_storycloze_out_without_its_data():
    plan = ds.resolve_tasks(None)
    assert plan.names == ["lambada_openai", "wikitext", "sciq", "arc_easy"]
    assert any("--storycloze-dir" in n for n in plan.notes)
    # The task-set id is part of every record key: equal for equal inputs, different when the limit changes.
    assert ds.resolve_tasks(None).task_set == plan.task_set
    assert ds.resolve_tasks(None, limit=10).task_set != plan.task_set


def test_missing_lm_eval_is_a_clear_error(cli, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    res = cli("downstream", "--model", "EleutherAI/pythia-160m", "--revisions", "step1,step2", "-o", tmp_path / "out")
    assert res.code == 2 and "pip install 'lmsat[downstream]'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()
