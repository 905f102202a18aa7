"""`--ray`: sweeps and n-gram counting as tasks of a real local Ray instance (2 CPUs, started once here).

Each test compares the Ray run with the single-process run of the same input:
the records of a sweep (every input, every result but wall time, the singular
values), and the n-gram count table.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from tests.experiments.test_sweep import SEQ_LEN, TOKENS, word_tokenizer, write_suite  # noqa: F401  (word_tokenizer: a fixture)

from lmsat.store import Store

REVISIONS = "0,6,9,15,18"  # five tasks: three plain, one that fails to load, one copy




@pytest.fixture(scope="module")
def family(tmp_path_factory, word_tokenizer, brown_dir) -> Path:  # noqa: F811
    """tiny-a's 6 checkpoints (steps 0..15), step9 cut in half (a failed load), step18 a copy of step15."""
    root = write_suite(tmp_path_factory.mktemp("raysuite") / "fam", word_tokenizer, brown_dir)
    model = root / "tiny-a"
    weights = model / "step9" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    shutil.copytree(model / "step15", model / "step18")
    return model


def args(model: Path, out: Path, brown_dir: Path, *extra: object) -> list[object]:
    return ["sweep", model, "--data", brown_dir, "--tokens", TOKENS, "--seq-len", SEQ_LEN, "--device", "cpu", "--revisions", REVISIONS, "-o", out, *extra]


@pytest.fixture(scope="module")
def local_run(family, brown_dir, tmp_path_factory) -> Path:
    from lmsat.cli import main

    out = tmp_path_factory.mktemp("local") / "run"
    try:
        main([str(a) for a in args(family, out, brown_dir)])
    except SystemExit as exc:
        assert not exc.code
    return out


def stored(out: Path) -> dict[str, tuple[dict, dict, np.ndarray | None]]:
    """key -> (inputs, results without wall time, singular values), read through the Store."""
    recs = {}
    for rec in Store(out).records("sweep"):
        results = {k: v for k, v in rec.results.items() if k != "wall_time_s"}
        recs[rec.key] = (rec.inputs, results, rec.load_arrays().get("singular_values"))
    return recs


def assert_same(a: Path, b: Path) -> None:
    ra, rb = stored(a), stored(b)
    assert set(ra) == set(rb)
    for key, (ia, xa, sa) in ra.items():
        ib, xb, sb = rb[key]
        assert ia == ib, key
        assert set(xa) == set(xb), key
        for name, value in xa.items():
            if isinstance(value, float):
                assert value == pytest.approx(xb[name], rel=1e-6, abs=1e-9), (key, name)
            else:
                assert value == xb[name], (key, name)
        assert (sa is None) == (sb is None), key
        if sa is not None:
            np.testing.assert_allclose(sa, sb, rtol=1e-6)


def json_files(out: Path) -> list[Path]:
    return sorted(p for p in (out / "sweep").iterdir() if p.is_file())


def test_ray_sweep_gives_the_local_records_and_a_killed_worker_is_retried_once(ray_address, family, local_run, brown_dir, tmp_path, cli, monkeypatch):
    from lmsat.experiments import sweep_ray

    marker = tmp_path / "killed.pid"
    real = sweep_ray.measure_unit

    def measure_then_die_once(unit, sample, settings):  # pickled by value into the worker
        result = real(unit, sample, settings)
        if unit.ckpt.revision == "step6" and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the worker dies with its result in hand
        return result

    monkeypatch.setattr(sweep_ray, "measure_unit", measure_then_die_once)
    out = tmp_path / "ray"
    res = cli(*args(family, out, brown_dir, "--ray-address", ray_address))
    assert res.code == 0, res.stderr
    assert marker.exists(), "the worker measuring step6 was never killed"
    assert "sweep on Ray (2 CPUs, 0 GPUs" in res.stdout
    assert "measured 5 checkpoint(s)" in res.stdout and "1 failed, 1 duplicate(s)" in res.stdout

    assert_same(local_run, out)
    recs = stored(out)
    base = os.path.normpath(str(family))
    assert recs[f"{base}@step6"][1]["status"] == "ok"  # retried after the kill
    assert recs[f"{base}@step9"][1]["status"] == "failed" and "deserializing header" in recs[f"{base}@step9"][1]["error"]
    assert {k: r[1]["duplicate_of"] for k, r in recs.items() if r[1]["duplicate_of"]} == {f"{base}@step18": f"{base}@step15"}
    # nothing duplicated or left behind: 5 json records, 4 arrays (the failed one has none), no claim lock, no temp file
    files = json_files(out)
    assert sum(p.suffix == ".json" for p in files) == 5 and sum(p.suffix == ".npz" for p in files) == 4, files
    claims = out / "sweep" / ".claims"
    assert not claims.exists() or not list(claims.iterdir()), list(claims.iterdir())
    assert len(list((out / "tokens").glob("*.npz"))) == 1
    # and a re-run with Ray measures nothing
    again = cli(*args(family, out, brown_dir, "--ray-address", ray_address))
    assert again.code == 0 and "skipped 5 already done" in again.stdout


def test_duplicate_flags_do_not_depend_on_the_order_records_are_written(tmp_path):
    """The one rule of local and Ray sweeps: the copy (step18) written before the original (step15) ends as step18 -> step15."""
    from lmsat.experiments.sweep import SweepSummary, _empty_results, write_record
    from lmsat.loading.checkpoints import Checkpoint

    hashes = {18: "h", 15: "h", 30: "h", 12: "g"}  # 30 also a copy; 12 different weights
    expected = {"m@step18": "m@step15", "m@step15": None, "m@step30": "m@step15", "m@step12": None}
    for order in ([18, 15, 30, 12], [12, 30, 18, 15], [15, 18, 12, 30]):
        store, index, summary, said = Store(tmp_path / "-".join(map(str, order))), {}, SweepSummary(), []
        for step in order:
            ck = Checkpoint(model="m", revision=f"step{step}", step=step, source="local", path=None)
            results = {**_empty_results(), "status": "ok", "weights_hash": hashes[step]}
            write_record(store, index, summary, ck, {"step": step}, results, None, said.append)
        flags = {r.key: r.results["duplicate_of"] for r in store.records("sweep")}
        assert flags == expected, order
        assert sorted(summary.duplicates) == sorted((k, v) for k, v in expected.items() if v), order
        assert summary.measured == 4


def test_local_sweep_resumed_with_a_lower_step_gives_the_flags_of_one_run(family, local_run, brown_dir, tmp_path, cli):
    """The copy (step18) measured first, its original (step15) in a later run: the records of one uninterrupted sweep."""
    out = tmp_path / "resumed"
    first = cli(*[a if a != REVISIONS else "18" for a in args(family, out, brown_dir)])
    assert first.code == 0, first.stderr
    second = cli(*args(family, out, brown_dir))
    assert second.code == 0, second.stderr
    assert "skipped 1 already done" in second.stdout
    base = os.path.normpath(str(family))
    assert f"duplicate weights: {base}@step18 has the same weights as {base}@step15" in second.stdout
    assert_same(local_run, out)


def test_ray_sweep_killed_midway_resumes_without_ray(ray_address, family, local_run, brown_dir, tmp_path, cli):
    out = tmp_path / "killed"
    env = {**os.environ, "LMSAT_PROGRESS": "0", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "lmsat", *map(str, args(family, out, brown_dir, "--ray-address", ray_address))]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "sweep").is_dir() and sum(p.suffix == ".json" for p in (out / "sweep").iterdir()) >= 2:
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)  # the driver dies; its tasks in flight are cancelled by Ray
        _, err = proc.communicate(timeout=30)
    done = sum(p.suffix == ".json" for p in (out / "sweep").iterdir()) if (out / "sweep").is_dir() else 0
    assert 2 <= done < 5, f"the kill did not land mid-sweep ({done} records); stderr: {err.decode()[-800:]}"
    resumed = cli(*args(family, out, brown_dir))  # no Ray
    assert resumed.code == 0, resumed.stderr
    assert f"skipped {done} already done" in resumed.stdout
    assert_same(local_run, out)


@pytest.mark.parametrize("extra, message", [
    (["--cpus-per-task", "0"], "--cpus-per-task must be positive"),
    (["--cpus-per-task", "3"], "--cpus-per-task 3 is more than the Ray cluster's 2 CPUs"),  # would wait forever
    (["--gpus-per-task", "1"], "each task asks for 1 GPU(s) but the Ray cluster has 0"),
])
def test_ray_options_mistakes_exit_2(ray_address, family, brown_dir, tmp_path, cli, extra, message):
    res = cli(*args(family, tmp_path / "o", brown_dir, "--ray-address", ray_address, *extra))
    assert res.code == 2 and res.stderr.startswith(f"lmsat: error: {message}"), res.stderr
    assert not (tmp_path / "o" / "sweep").exists()


# --- n-gram counting -------------------------------------------------------------------------


@pytest.mark.parametrize("vocab_size, n", [(50, 3), (70_000, 5)])  # V^n fits in 64 bits / does not
def test_ray_ngram_count_equals_the_one_process_count_of_a_random_stream(ray_address, vocab_size, n):
    from lmsat.executor import RayExecutor
    from lmsat.experiments.ngram_ray import count_distributed
    from lmsat.measure.ngram import count_ngrams

    rng = np.random.default_rng(vocab_size)
    stream = rng.integers(0, vocab_size, 30_000)
    stream[5_000:9_000] = stream[1_000:5_000]  # repeated text: counts > 1 across shards
    cuts = [0, 2, 2, 3, 7_000, 7_001, 18_000, 30_000]  # shards shorter than n-1, an empty one, uneven long ones
    shards = [stream[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    got, _ = count_distributed(iter(shards), n, vocab_size, RayExecutor(ray_address), n_buckets=3)
    ref = count_ngrams(stream, n, vocab_size)
    assert ref.count.max() > 1 and got.n_tokens == stream.size
    for name in ("contexts", "indptr", "next_token", "count"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)


def test_ray_ngram_rank_cli_gives_the_counts_and_spectrum_of_the_local_run(ray_address, gpt2_bpe, brown_dir, tmp_path, cli, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in sorted(brown_dir.glob("*.txt"))[:6]:
        shutil.copy(p, corpus / p.name)
    monkeypatch.setenv("LMSAT_RAY_SHARD_CHARS", "20000")  # several shards
    common = ["ngram-rank", "-t", gpt2_bpe, "-d", corpus, "--n", 3, "--device", "cpu"]
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert cli(*common, "-o", local).code == 0
    from lmsat.experiments import ngram

    def no_p_on_the_driver(*a, **k):
        raise AssertionError("--ray built P and took its spectrum on the driver")

    monkeypatch.setattr(ngram, "sparse_singular_values", no_p_on_the_driver)  # --ray: P^T P from bucket tasks
    monkeypatch.setattr(ngram, "next_token_matrix", no_p_on_the_driver)
    res = cli(*common, "-o", distributed, "--ray-address", ray_address)
    assert res.code == 0, res.stderr
    for kind in ("ngram_counts", "ngram"):
        (a,), (b,) = Store(local).records(kind), Store(distributed).records(kind)
        assert a.key == b.key
        xa, xb = a.load_arrays(), b.load_arrays()
        assert set(xa) == set(xb)
        for name in xa:
            if kind == "ngram_counts":
                np.testing.assert_array_equal(xa[name], xb[name], err_msg=name)
            else:
                np.testing.assert_allclose(xa[name], xb[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert Store(distributed).records("ngram_counts")[0].results["n_documents"] == Store(local).records("ngram_counts")[0].results["n_documents"]
    (a,), (b,) = Store(local).records("ngram"), Store(distributed).records("ngram")
    for name in ("n_contexts", "n_ngrams", "n_ngram_occurrences", "observed_vocab", "n_singular_values", "complete", "rank", "blocks",
                 "rank_bound", "dims_for_w_error", "noise_floor_dimension", "method"):
        assert a.results[name] == b.results[name], name
    for name, value in a.results["noise"].items():
        assert b.results["noise"][name] == pytest.approx(value, rel=1e-10, abs=1e-13), name
    assert b.results["blocks"]["trivial_blocks"] > 0 and b.results["blocks"]["large_blocks"]  # every kind of block
    assert sum(len(p.read_text()) for p in corpus.iterdir()) >= 3 * 20000  # really several shards


def test_ray_ngram_rank_refuses_max_tokens(gpt2_bpe, brown_dir, tmp_path, cli):
    res = cli("ngram-rank", "-t", gpt2_bpe, "-d", brown_dir, "--max-tokens", 1000, "--ray", "-o", tmp_path / "o")
    assert res.code == 2 and res.stderr.startswith("lmsat: error: --max-tokens cannot be combined with --ray")
