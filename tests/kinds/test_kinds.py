"""Record kinds (lmsat.kinds): every kind's round trip, schema checks, explicit upgrades, and figures
drawn from stored records without recomputing anything."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lmsat import kinds
from lmsat.errors import UserError
from lmsat.kinds.head import HeadRecord
from lmsat.kinds.sweep import SweepRecord
from lmsat.kinds.train import TrainRecord
from lmsat.store import Store


def _sample_value(name: str, i: int):
    """A plain JSON value per field (distinct per field, so a swapped field would show)."""
    return {"layers": [{"layer": 0, "depth": 0.0, "anisotropy": 0.1 * i, "mean_norm": 1.0}], "head": {"tied": False, "vocab_rows": 7},
            "tasks": {"sciq": {"acc": 0.5}}, "rows": [{"task": "sciq", "best": 1.0}]}.get(name, i + 0.5)


@pytest.mark.parametrize("name", list(kinds.REGISTRY))
def test_every_kind_round_trips_its_record(name, tmp_path):
    cls = kinds.REGISTRY[name].record
    results = {f: _sample_value(f, i) for i, f in enumerate(cls.result_fields())}
    results["a_field_of_a_newer_writer"] = [1, 2]  # untyped results are kept verbatim
    inputs = {"model": "fam/m", "hidden_size": 8, "nested": {"x": 1}}
    rec = Store(tmp_path).put(name, "k|1", inputs, results, arrays={"a": np.arange(3.0)}, schema_version=cls.VERSION)
    typed = cls.from_record(rec)
    assert {f: getattr(typed, f) for f in cls.result_fields()} == {f: results[f] for f in cls.result_fields()}
    out = typed.to_record()
    assert out["kind"] == name and out["key"] == "k|1" and out["schema_version"] == cls.VERSION
    assert out["inputs"] == inputs and out["results"] == results
    # written back, the record file holds the same inputs and results (and a typed re-read is equal)
    again = typed.put(Store(tmp_path / "again"), arrays={"a": np.arange(3.0)})
    assert cls.from_record(again) == typed
    assert kinds.typed(rec) == typed


def test_fields_a_record_lacks_stay_absent(tmp_path):
    rec = Store(tmp_path).put("sweep", "m@step0", {"model": "m", "step": 0}, {"status": "failed", "error": "boom"})
    typed = SweepRecord.from_record(rec)
    assert typed.to_record()["results"] == {"status": "failed", "error": "boom"}
    assert typed.loss is None and not typed.usable


def test_unknown_schema_version_asks_for_a_rerun(tmp_path):
    rec = Store(tmp_path).put("sweep", "m@step0", {"model": "m", "step": 0}, {"status": "ok"}, schema_version=7)
    with pytest.raises(UserError, match=r"lmsat\.sweep/7.*re-run `lmsat sweep`"):
        SweepRecord.from_record(rec)
    other = Store(tmp_path).put("head", "m", {"model": "m"}, {})
    with pytest.raises(UserError, match="is of kind 'head', not 'sweep'"):
        SweepRecord.from_record(other)


def test_usable_checkpoint_rule(tmp_path):
    store = Store(tmp_path)
    cases = {  # results -> usable?
        "ok": ({"status": "ok", "cross_entropy": 3.0}, True),
        "failed": ({"status": "failed", "cross_entropy": 3.0}, False),
        "duplicate": ({"status": "ok", "cross_entropy": 3.0, "duplicate_of": "m@main"}, False),
        "nan": ({"status": "ok", "cross_entropy": None}, False),
    }
    for key, (results, want) in cases.items():
        rec = store.put("sweep", key, {"model": "m", "step": 1}, results)
        assert SweepRecord.from_record(rec).usable is want, key


def _head_v1(tmp_path, s):
    """A head record as lmsat 0.x wrote it (schema 1: singular values only)."""
    return Store(tmp_path).put("head", "m", {"model": "m", "hidden_size": len(s)}, {"singular_entropy": 0.5},
                               arrays={"singular_values": s}, schema_version=1)


def test_head_schema_1_is_upgraded_with_its_w_error_curve(tmp_path):
    s = np.array([3.0, 2.0, 1.0])
    h = HeadRecord.from_record(_head_v1(tmp_path, s))
    # W-error(k) = sqrt(sum_{i>k} s_i^2) / |s|: by hand, sqrt(14, 5, 1, 0) / sqrt(14)
    np.testing.assert_allclose(h.w_error_curve(), np.sqrt([14.0, 5.0, 1.0, 0.0]) / np.sqrt(14.0))


def test_train_schema_1_is_upgraded_with_its_effective_ranks(tmp_path):
    spectra = np.array([[1.0, 1.0], [1.0, 0.0]])  # flat -> rank 2; one direction -> rank 1
    rec = Store(tmp_path).put("train", "m", {"model": "m"}, {"hidden_size": 2},
                              arrays={"checkpoint_steps": np.array([0, 10]), "head_singular_values": spectra}, schema_version=1)
    np.testing.assert_allclose(TrainRecord.from_record(rec).head_effective_rank(), [2.0, 1.0])


def _no_recomputing(monkeypatch):
    import lmsat.measure.spectrum as spectrum

    def refuse(*a, **k):
        raise AssertionError("a figure recomputed a measurement")

    for name in ("w_error_curve", "effective_rank", "singular_entropy", "singular_values"):
        monkeypatch.setattr(spectrum, name, refuse)


def test_head_figures_draw_the_stored_curve_without_recomputing(tmp_path, monkeypatch):
    from lmsat.figures.models import plot_head_spectrum, plot_head_w_error

    s = np.array([3.0, 2.0, 1.0])
    stored = np.array([1.0, 0.6, 0.25, 0.0])  # deliberately not the curve of s: the figure must draw what is stored
    rec = Store(tmp_path).put("head", "m", {"model": "m", "hidden_size": 3}, {"singular_entropy": 0.5},
                              arrays={"singular_values": s, "w_error": stored}, schema_version=2)
    _no_recomputing(monkeypatch)
    import matplotlib.pyplot as plt

    drawn = {}
    real_save = __import__("lmsat.figures.style", fromlist=["save"]).save

    def keep(fig, path):
        drawn[path] = [line.get_ydata().copy() for ax in fig.axes for line in ax.get_lines()]
        return real_save(fig, path)

    monkeypatch.setattr("lmsat.figures.models.save", keep)
    plot_head_w_error([rec], tmp_path / "w.png")
    plot_head_spectrum([rec], tmp_path / "s.png")
    np.testing.assert_array_equal(drawn[tmp_path / "w.png"][0], stored)
    np.testing.assert_allclose(drawn[tmp_path / "s.png"][0], s / s[0])
    plt.close("all")


def test_training_head_figure_draws_stored_effective_ranks_without_recomputing(tmp_path, monkeypatch):
    from lmsat.figures.training import plot_head_over_training

    rec = Store(tmp_path).put("train", "m", {"model": "m"}, {"hidden_size": 4},
                              arrays={"checkpoint_steps": np.array([0, 10]), "head_effective_rank": np.array([3.0, 2.0]),
                                      "head_singular_values": np.ones((2, 4)), "last_layer_anisotropy": np.array([0.1, 0.2])},
                              schema_version=2)
    _no_recomputing(monkeypatch)
    assert plot_head_over_training([rec], tmp_path / "t.png").stat().st_size > 1000


def test_report_diagnosis_and_summary_read_stable_ids_not_labels(tmp_path):
    from lmsat.report import diagnosis as dg
    from lmsat.report.content import summary_frame

    store = Store(tmp_path)
    synth = store.put("synth", "lang", {}, {"rank": 16, "family": "low-rank-logits", "expected_entropy": 2.0})
    train = store.put("train", "tiny", {"model": "tiny", "data": {"corpus": {"source": "lang"}}},
                      {"hidden_size": 8, "final_eval_loss": 2.5, "final_gap": 0.5})
    (diag,) = dg.diagnose({"synth": [synth], "train": [train]})
    known = next(f for f in diag.findings if f.id == dg.KNOWN_RANK)
    assert known.values["generator_rank"] == 16 and known.values["final_gap"] == 0.5
    known.numbers.clear()  # the display labels are not what the summary reads
    row = summary_frame([diag]).iloc[0]
    assert row["known rank"] == 16 and row["gap to true entropy"] == 0.5 and row["bottleneck"] == dg.BINDING


def test_checkpoint_folders_are_named_by_the_one_step_parser():
    from lmsat.kinds.common import model_name
    from lmsat.loading.checkpoints import step_from_name

    for folder in ("step400", "step-5", "checkpoint-500", "checkpoint_500"):
        assert step_from_name(folder) is not None
        assert model_name({"model": f"/runs/fam/tiny-a/{folder}"}) == "tiny-a"
    assert model_name({"model": "/runs/fam/tiny-a/final"}) == "final"


def test_stored_json_of_a_typed_record_keeps_the_writers_field_order(tmp_path):
    """Byte compatibility: the head writer's results, in head_summary's order, then the head facts."""
    from lmsat.experiments.head import head_summary

    s = np.array([2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01])
    summary = head_summary(s)
    rec = HeadRecord(key="m", inputs={"model": "m"}, **summary, head={"tied": True}).put(Store(tmp_path))
    raw = json.loads(rec.path.read_text())
    assert list(raw["results"]) == [*summary, "head"]
    assert raw["schema"] == "lmsat.head/2" and math.isclose(raw["results"]["singular_entropy"], summary["singular_entropy"])


def test_downstream_comparison_rows_keep_their_task_set(tmp_path):
    from lmsat.kinds.downstream import DownstreamTableRecord, frame as downstream_frame

    rows = [{"model": "m", "task": "sciq", "metric": "acc", "best": 80.0, "final": 75.0, "difference": -5.0}]
    rec = Store(tmp_path).put("downstream_table", "m#t", {"task_set": "t", "dtype": "float32"}, {"rows": rows, "n_metrics": 1})
    frame = downstream_frame([DownstreamTableRecord.from_record(rec)])
    assert frame.loc[0, ["task", "best", "final", "difference", "task_set", "dtype"]].tolist() == ["sciq", 80.0, 75.0, -5.0, "t", "float32"]
