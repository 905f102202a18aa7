"""The results store: identity (one file per exact key), corruption (redo, never a traceback), claims."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from lmsat.store import CorruptRecord, Store, record_name, slugify


def test_keys_that_slugify_alike_keep_two_records(tmp_path):
    store = Store(tmp_path)
    assert slugify("coll/a b") == slugify("coll/a_b")  # the case that used to overwrite
    store.put("head", "coll/a b", {"model": "coll/a b"}, {"x": 1.0})
    store.put("head", "coll/a_b", {"model": "coll/a_b"}, {"x": 2.0})
    assert store.get("head", "coll/a b").results["x"] == 1.0
    assert store.get("head", "coll/a_b").results["x"] == 2.0
    assert [r.key for r in store.records("head")] == ["coll/a b", "coll/a_b"]
    assert record_name("coll/a b") != record_name("coll/a_b")


def test_legacy_file_is_read_only_for_its_exact_key(tmp_path):
    """A 0.1 run directory (file named by slug only) keeps working, but never answers for another key."""
    folder = tmp_path / "head"
    folder.mkdir()
    raw = {"schema": "lmsat.head/1", "kind": "head", "key": "coll/a b", "inputs": {}, "results": {"x": 1.0}, "arrays": []}
    (folder / f"{slugify('coll/a b')}.json").write_text(json.dumps(raw))
    store = Store(tmp_path)
    assert store.get("head", "coll/a b").results["x"] == 1.0
    assert store.get("head", "coll/a_b") is None  # same slug, other key: absent, not the wrong numbers
    # re-measuring the key supersedes the legacy file instead of leaving two records
    store.put("head", "coll/a b", {}, {"x": 3.0})
    assert [(r.key, r.results["x"]) for r in store.records("head")] == [("coll/a b", 3.0)]
    assert not (folder / f"{slugify('coll/a b')}.json").exists()


def _good_and(store: Store) -> None:
    store.put("sweep", "good", {}, {"loss": 1.5}, arrays={"s": np.arange(4.0)})


@pytest.mark.parametrize(
    "damage",
    ["truncated_json", "json_array", "wrong_kind", "missing_npz", "truncated_npz"],
)
def test_damaged_record_is_moved_aside_and_redone(tmp_path, capsys, damage):
    store = Store(tmp_path)
    _good_and(store)
    rec = store.put("sweep", "bad", {}, {"loss": 2.0}, arrays={"s": np.arange(1000.0)})
    path = rec.path
    npz = path.with_suffix(".npz")
    if damage == "truncated_json":
        path.write_text(path.read_text()[:40])
    elif damage == "json_array":
        path.write_text("[1, 2, 3]")
    elif damage == "wrong_kind":
        path.write_text(path.read_text().replace('"kind": "sweep"', '"kind": "head"'))
    elif damage == "missing_npz":
        npz.unlink()
    elif damage == "truncated_npz":
        npz.write_bytes(npz.read_bytes()[:100])
    capsys.readouterr()
    assert store.get("sweep", "bad") is None  # absent: the unit is redone
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmsat: warning:") and path.name in err[0]
    assert path.with_name(path.name + ".corrupt").exists()  # kept for inspection, out of the way
    # the good record is untouched, and listing no longer sees the damaged one
    assert [r.key for r in store.records("sweep")] == ["good"]
    np.testing.assert_array_equal(store.get("sweep", "good").load_arrays()["s"], np.arange(4.0))
    # redoing the unit writes a fresh record
    store.put("sweep", "bad", {}, {"loss": 2.0})
    assert store.get("sweep", "bad").results["loss"] == 2.0


def test_arrays_damaged_after_reading_raise_one_clear_error(tmp_path):
    store = Store(tmp_path)
    rec = store.put("head", "m", {}, {}, arrays={"s": np.arange(100.0)})
    npz = rec.path.with_suffix(".npz")
    data = bytearray(npz.read_bytes())
    data[200] ^= 0xFF  # flip one byte inside the array data: the zip CRC no longer matches
    npz.write_bytes(bytes(data))
    with pytest.raises(CorruptRecord, match=r"cannot be read.*re-run"):
        rec.load_arrays()


def test_interrupted_put_leaves_no_record(tmp_path, monkeypatch):
    store = Store(tmp_path)
    import lmsat.store as st

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(st, "atomic_write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        store.put("head", "m", {}, {"x": 1}, arrays={"s": np.ones(3)})
    monkeypatch.undo()
    assert store.get("head", "m") is None
    assert not any(p.suffix == ".json" for p in (tmp_path / "head").iterdir())


def test_claim_is_exclusive_and_released(tmp_path):
    store = Store(tmp_path)
    with store.claim("sweep", "k") as first:
        with store.claim("sweep", "k") as second:
            assert first is True and second is False
        with store.claim("sweep", "other") as third:
            assert third is True
    with store.claim("sweep", "k") as again:
        assert again is True


def _hold_claim_then_die(root: str, ready: str) -> None:
    store = Store(root)
    with store.claim("sweep", "k") as mine:
        assert mine
        Path(ready).write_text("held")
        import time

        time.sleep(60)  # killed here: the claim must not outlive the process


def test_claim_of_a_killed_process_is_free_and_a_live_one_is_respected(tmp_path):
    import signal
    import time

    ready = tmp_path / "ready"
    proc = mp.get_context("spawn").Process(target=_hold_claim_then_die, args=(str(tmp_path), str(ready)))
    proc.start()
    while not ready.exists():
        time.sleep(0.05)
    store = Store(tmp_path)
    with store.claim("sweep", "k") as mine:
        assert mine is False  # a live holder in another process is respected
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    lock = tmp_path / "sweep" / ".claims" / f"{record_name('k')}.lock"
    assert lock.exists()  # the killed holder left its file behind ...
    assert json.loads(lock.read_text())["pid"] == proc.pid
    with store.claim("sweep", "k") as mine:
        assert mine is True  # ... but not its claim
    assert not lock.exists()  # released claims leave no file


def _claim_worker(root: str, keys: list[str], out: str) -> None:
    store = Store(root)
    done = []
    for k in keys:
        with store.claim("unit", k) as mine:
            if mine and not store.has("unit", k):
                store.put("unit", k, {}, {"by": os.getpid()})
                done.append(k)
    Path(out).write_text(json.dumps(done))


def test_two_processes_split_units_exactly_once(tmp_path):
    keys = [f"k{i}" for i in range(60)]
    ctx = mp.get_context("spawn")
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_claim_worker, args=(str(tmp_path / "run"), keys, str(o))) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    done = [json.loads(o.read_text()) for o in outs]
    assert sorted(done[0] + done[1]) == sorted(keys)  # every unit once: none lost, none twice
    assert len(Store(tmp_path / "run").records("unit")) == 60


def test_gguf_file_is_part_of_a_models_identity(tmp_path):
    from lmsat.experiments.common import model_key
    from lmsat.loading.models import parse_model_arg

    (tmp_path / "model.gguf").write_bytes(b"")
    (tmp_path / "other.gguf").write_bytes(b"")
    folder = parse_model_arg(str(tmp_path))
    gguf = parse_model_arg(str(tmp_path / "model.gguf"))
    other = parse_model_arg(str(tmp_path / "other.gguf"))
    assert len({model_key(folder), model_key(gguf), model_key(other)}) == 3


def test_token_sample_damaged_is_rebuilt_identically(tmp_path, capsys, brown_dir, gpt2_bpe):
    from lmsat.loading.corpus import CorpusSpec
    from lmsat.loading.tokenizers import load_tokenizer
    from lmsat.loading.tokens import get_token_sample

    corpus = CorpusSpec(source=str(brown_dir))
    tok = load_tokenizer(str(gpt2_bpe))
    first = get_token_sample(tmp_path, corpus, tok, 512, 64, seed=1)
    path = tmp_path / "tokens" / f"{first.hash}.npz"
    path.write_bytes(path.read_bytes()[:64])
    capsys.readouterr()
    again = get_token_sample(tmp_path, corpus, tok, 512, 64, seed=1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged" in err[0] and str(path) in err[0]
    np.testing.assert_array_equal(again.ids, first.ids)


def test_head_of_two_models_whose_names_slugify_alike(tmp_path, cli, smollm2_hf):
    """`lmsat head 'coll/a b' 'coll/a_b'`: two models, two records, each with its own numbers."""
    from tests.conftest import _save_tiny
    from lmsat.loading.models import parse_model_arg, load_model, lm_head_weight
    from lmsat.measure.spectrum import singular_values

    a = _save_tiny("gpt_neox", tmp_path / "coll" / "a b", smollm2_hf, seed=1)
    b = _save_tiny("gpt_neox", tmp_path / "coll" / "a_b", smollm2_hf, seed=2, hidden=48)
    out = tmp_path / "run"
    res = cli("head", a, b, "-o", out)
    assert res.code == 0, res.stderr
    recs = {r.inputs["model"]: r for r in Store(out).records("head")}
    assert len(recs) == 2
    for folder in (a, b):
        w, _ = lm_head_weight(load_model(parse_model_arg(str(folder))).model)
        expected = singular_values(w.detach().float().numpy())
        got = recs[str(folder)].load_arrays()["singular_values"]
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert recs[str(b)].inputs["hidden_size"] == 48


from tests.experiments.test_sweep import sweep_args, tiny_suite, word_tokenizer  # noqa: E402,F401  (module fixtures)


def test_sweep_of_two_models_whose_names_slugify_alike_keeps_every_checkpoint(cli, tiny_suite, brown_dir, tmp_path):
    """`lmsat sweep coll2/fam/m coll2/fam--m`: both models' checkpoints are measured and kept."""
    import shutil

    a = tmp_path / "coll2" / "fam" / "m"
    b = tmp_path / "coll2" / "fam--m"
    shutil.copytree(tiny_suite / "tiny-a", a)
    shutil.copytree(tiny_suite / "tiny-b", b)
    out = tmp_path / "run"
    args = sweep_args(a, out, brown_dir)
    args.insert(2, b)
    res = cli(*args)
    assert res.code == 0, res.stderr
    n_ckpt = len(list(a.glob("step*"))) + len(list(b.glob("checkpoint-*")))
    recs = Store(out).records("sweep")
    assert len(recs) == n_ckpt
    assert {r.inputs["model"] for r in recs} == {str(a), str(b)}
    again = cli(*args)
    assert again.code == 0 and len(Store(out).records("sweep")) == n_ckpt


def test_a_model_retrained_in_the_same_folder_is_measured_again(tmp_path, cli, smollm2_hf):
    """`lmsat head FOLDER`, new weights saved into FOLDER, `lmsat head FOLDER` again: the record follows the new
    weights (with one warning), not the stale ones; an unchanged folder is not measured twice."""
    from tests.conftest import _save_tiny
    from lmsat.loading.models import lm_head_weight, load_model, parse_model_arg
    from lmsat.measure.spectrum import singular_values

    folder = _save_tiny("gpt_neox", tmp_path / "model", smollm2_hf, seed=1)
    out = tmp_path / "run"
    assert cli("head", folder, "-o", out).code == 0
    first = Store(out).records("head")[0]
    s_first = first.load_arrays()["singular_values"]
    again = cli("head", folder, "-o", out)
    assert again.code == 0 and "changed" not in again.stderr
    assert Store(out).records("head")[0].path.stat().st_mtime_ns == first.path.stat().st_mtime_ns  # reused
    _save_tiny("gpt_neox", folder, smollm2_hf, seed=2)  # re-trained in place
    res = cli("head", folder, "-o", out)
    assert res.code == 0, res.stderr
    assert [ln for ln in res.stderr.splitlines() if "changed since" in ln] and "measuring again" in res.stderr
    (rec,) = Store(out).records("head")
    w, _ = lm_head_weight(load_model(parse_model_arg(str(folder))).model)
    np.testing.assert_allclose(rec.load_arrays()["singular_values"], singular_values(w.detach().float().numpy()), rtol=1e-5)
    assert rec.inputs["weights_fingerprint"] != first.inputs["weights_fingerprint"]
    assert not np.allclose(rec.load_arrays()["singular_values"], s_first)


def test_a_checkpoint_replaced_in_place_is_swept_again(cli, tiny_suite, brown_dir, tmp_path):
    """A local checkpoint folder whose weights change after its sweep record was written is measured again on the
    next sweep (one warning naming it); the unchanged checkpoints keep their records."""
    import shutil

    a = tmp_path / "fam" / "m"
    shutil.copytree(tiny_suite / "tiny-a", a)
    out = tmp_path / "run"
    assert cli(*sweep_args(a, out, brown_dir)).code == 0
    before = {r.key: (r.path.stat().st_mtime_ns, r.results["weights_hash"]) for r in Store(out).records("sweep")}
    steps = sorted(a.glob("step*"), key=lambda p: int(p.name[4:]))
    shutil.rmtree(steps[-1])
    shutil.copytree(steps[0], steps[-1])  # the last checkpoint now holds the first one's weights
    res = cli(*sweep_args(a, out, brown_dir))
    assert res.code == 0, res.stderr
    assert sum("changed since" in ln for ln in res.stderr.splitlines()) == 1
    after = {r.key: r for r in Store(out).records("sweep")}
    last, first = f"{a}@{steps[-1].name}", f"{a}@{steps[0].name}"
    assert after[last].results["weights_hash"] == before[first][1] != before[last][1]
    assert after[last].results["duplicate_of"] == first  # now flagged as the first checkpoint's weights
    assert {k: r.path.stat().st_mtime_ns for k, r in after.items() if k != last} == {k: v[0] for k, v in before.items() if k != last}


def test_duplicate_flags_follow_weights_that_change_in_place(cli, tiny_suite, brown_dir, tmp_path):
    """step9 is stored as a copy of step6; then step6's folder gets step3's weights. The next sweep re-measures
    step6, which now repeats step3, and releases step9: it is a checkpoint of its own again (review finding)."""
    import shutil

    a = tmp_path / "fam" / "m"
    shutil.copytree(tiny_suite / "tiny-a", a)
    shutil.rmtree(a / "step9")
    shutil.copytree(a / "step6", a / "step9")
    out = tmp_path / "run"
    assert cli(*sweep_args(a, out, brown_dir)).code == 0
    flags = {r.inputs["revision"]: r.results["duplicate_of"] for r in Store(out).records("sweep")}
    assert flags["step9"] == f"{a}@step6" and flags["step6"] is None
    shutil.rmtree(a / "step6")
    shutil.copytree(a / "step3", a / "step6")
    res = cli(*sweep_args(a, out, brown_dir))
    assert res.code == 0, res.stderr
    flags = {r.inputs["revision"]: r.results["duplicate_of"] for r in Store(out).records("sweep")}
    assert flags["step6"] == f"{a}@step3" and flags["step9"] is None and flags["step3"] is None


def test_duplicate_rule_repairs_what_one_process_could_not_see(tmp_path):
    """Two sweeps on one run directory, or one killed between a record and the re-pointing of its copies, can
    leave two records of the same weights both marked original, or a pointer to a record of other weights:
    normalise_duplicates applies the rule (lowest step is the original) to all records at once."""
    from lmsat.experiments.sweep import normalise_duplicates

    store = Store(tmp_path)
    for step, h, dup in ((100, "h", None), (200, "h", None), (300, "h", "m@step200"), (400, "g", "m@step100"), (500, None, None)):
        store.put("sweep", f"m@step{step}", {"model": "m", "revision": f"step{step}", "step": step},
                  {"status": "ok" if h else "failed", "cross_entropy": 3.0, "weights_hash": h, "duplicate_of": dup})
    assert normalise_duplicates(store) == 3
    flags = {r.inputs["step"]: r.results["duplicate_of"] for r in store.records("sweep")}
    assert flags == {100: None, 200: "m@step100", 300: "m@step100", 400: None, 500: None}
    assert normalise_duplicates(store) == 0  # idempotent


def test_readers_skip_a_damaged_record_with_a_warning_and_leave_it_for_its_writer(tmp_path, capsys):
    """A reader (the report, saturation, figures: Store(readonly=True)) never moves a damaged record; it warns and
    skips it, and says when a writer set records aside, so a checkpoint missing from a table is never silent."""
    store = Store(tmp_path)
    for step in (10, 20):
        store.put("sweep", f"m@step{step}", {"model": "m", "step": step}, {"status": "ok", "cross_entropy": 3.0})
    bad = store.record_path("sweep", "m@step20")
    bad.write_text('{"schema": 1, "garbage": true')
    reader = Store(tmp_path, readonly=True)
    assert [r.key for r in reader.records("sweep")] == ["m@step10"]
    err = capsys.readouterr().err
    assert bad.exists() and "skipped and left in place" in err and str(bad) in err
    assert [r.key for r in store.records("sweep")] == ["m@step10"]  # a writer moves it aside (and redoes the unit)
    assert not bad.exists() and bad.with_name(bad.name + ".corrupt").exists()
    capsys.readouterr()
    reader.records("sweep")
    assert "1 damaged sweep record(s) were set aside" in capsys.readouterr().err
