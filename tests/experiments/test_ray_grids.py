"""`lmsat train --ray` and `lmsat downstream --ray`: the grid's units as tasks of a real local Ray instance (2 CPUs).

Each test compares the Ray run with the local run of the same command: the same
records (every input, every result but wall times), the same checkpoint weights
and logs. The local runs use one torch thread, as each Ray task does (1 CPU per task),
so the floating-point results are bit for bit the same.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from tests.experiments.test_downstream import brown_tasks, suite  # noqa: F401  (module fixtures)

from lmsat.store import Store

LANGUAGE = ["--vocab", 32, "--contexts", 32, "--rank", 8, "--temperature", 0.5, "-n", 20_000, "--heldout-tokens", 1024]
TRAIN = ["--layers", 1, "--heads", 2, "--steps", 24, "--batch-size", 8, "--seq-len", 16, "--warmup", 4,
         "--checkpoint-every", 8, "--eval-tokens", 512, "--log-every", 4, "--device", "cpu", "--hidden-sizes", "4,8"]
TIMES = {"wall_time_s", "train_seconds", "elapsed_s", "duration_s", "seconds", "tokens_per_second"}




@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray task with 1 CPU (OMP_NUM_THREADS=1)
    yield
    torch.set_num_threads(before)


def _no_times(value):
    if isinstance(value, dict):
        return {k: _no_times(v) for k, v in value.items() if k not in TIMES and not k.endswith("_seconds") and not k.endswith("_s")}
    if isinstance(value, list):
        return [_no_times(v) for v in value]
    return value


def records(out: Path, kind: str) -> dict[str, tuple[dict, dict]]:
    """key -> (inputs, results) without timings, the run directory's path written OUT (two runs, two folders)."""
    def norm(x: dict) -> dict:
        return json.loads(json.dumps(_no_times(x), default=str).replace(str(out), "OUT"))

    return {r.key: (norm(r.inputs), norm(r.results)) for r in Store(out).records(kind)}


# --- train -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def language(tmp_path_factory) -> Path:
    from lmsat.cli import main

    root = tmp_path_factory.mktemp("raylang")
    try:
        main([str(a) for a in ["synth", "-o", root / "lang", *LANGUAGE]])
    except SystemExit as exc:
        assert not exc.code
    return root / "lang"


def train_args(lang: Path, out: Path, *extra: object) -> list[object]:
    return ["train", "--data", lang / "corpus", "--tokenizer", lang / "tokenizer", "-o", out, *TRAIN, *extra]


def metrics_lines(path: Path) -> list[dict]:
    return [_no_times(json.loads(line)) for line in path.read_text().splitlines()]


def test_ray_train_gives_the_local_models_and_a_worker_killed_mid_training_resumes(ray_address, language, tmp_path, cli, one_thread, monkeypatch):
    from safetensors.numpy import load_file

    from lmsat.training import loop

    local = tmp_path / "local"
    res = cli(*train_args(language, local))
    assert res.code == 0, res.stderr

    marker = tmp_path / "killed"

    def train_then_die_once(cfg, inputs, data, output, force=False):  # pickled by value into the worker
        from lmsat.training import loop as worker_loop

        real_save = worker_loop.save_checkpoint

        def save(model, tokenizer, model_dir, step, state):
            real_save(model, tokenizer, model_dir, step, state)
            if cfg.hidden_size == 8 and step == 16 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)  # the worker dies between checkpoints

        worker_loop.save_checkpoint = save  # the worker's own (unpatched) module: its train_model calls this
        return worker_loop.train_model(cfg, inputs, data, output, force)

    monkeypatch.setattr(loop, "train_model", train_then_die_once)
    distributed = tmp_path / "ray"
    res = cli(*train_args(language, distributed, "--ray-address", ray_address))
    assert res.code == 0, res.stderr
    assert marker.exists(), "the worker training d=8 was never killed"
    assert "train on Ray (2 CPUs, 0 GPUs" in res.stdout

    a, b = records(local, "train"), records(distributed, "train")
    assert set(a) == set(b) and len(a) == 2
    for key in a:
        assert a[key][0] == b[key][0], key
        assert a[key][1] == b[key][1], key
        assert metrics_lines(local / key / "metrics.jsonl") == metrics_lines(distributed / key / "metrics.jsonl"), key
        steps = sorted(p.name for p in (local / key).glob("step*"))
        assert steps == sorted(p.name for p in (distributed / key).glob("step*")) and "step24" in steps
        for step in steps:
            wa, wb = load_file(local / key / step / "model.safetensors"), load_file(distributed / key / step / "model.safetensors")
            assert set(wa) == set(wb)
            for name in wa:
                np.testing.assert_array_equal(wa[name], wb[name], err_msg=f"{key} {step} {name}")
    assert (distributed / "training.csv").is_file()
    again = cli(*train_args(language, distributed, "--ray-address", ray_address))  # finished: nothing retrained
    assert again.code == 0 and records(distributed, "train") == b

    # other settings in the same folder: the task's refusal is the command's one-line error, nothing touched
    before = {p: p.stat().st_mtime_ns for p in distributed.rglob("*") if p.is_file()}
    res = cli(*train_args(language, distributed, "--lr", "0.01", "--ray-address", ray_address))
    assert res.code == 2 and res.stderr.startswith("lmsat: error: ") and "\n" not in res.stderr.strip(), res.stderr
    assert {p: p.stat().st_mtime_ns for p in distributed.rglob("*") if p.is_file()} == before


def test_ray_options_without_ray_are_refused(language, tmp_path, cli):
    res = cli(*train_args(language, tmp_path / "o", "--cpus-per-task", "2"))
    assert res.code == 2 and res.stderr.startswith("lmsat: error: --gpus-per-task and --cpus-per-task apply to Ray tasks")
    assert not (tmp_path / "o").exists()


# --- downstream --------------------------------------------------------------------------------


def test_ray_downstream_gives_the_local_records(ray_address, suite, brown_tasks, tmp_path, cli, one_thread):  # noqa: F811
    common = ["downstream", suite["run"], "--include-path", brown_tasks["tasks"], "--tasks", "brown_ppl,brown_cloze",
              "--bootstrap-iters", "0", "--batch-size", "4", "--device", "cpu"]
    local, distributed = tmp_path / "local", tmp_path / "ray"
    res = cli(*common, "-o", local)
    assert res.code == 0, res.stderr
    res = cli(*common, "-o", distributed, "--ray-address", ray_address)
    assert res.code == 0, res.stderr
    assert "downstream on Ray (2 CPUs" in res.stdout
    for kind in ("downstream", "downstream_table"):
        a, b = records(local, kind), records(distributed, kind)
        assert set(a) == set(b) and a, kind
        for key in a:
            assert {k: v for k, v in a[key][0].items() if k != "lm_eval_version"} == {k: v for k, v in b[key][0].items() if k != "lm_eval_version"}, key
            assert a[key][1] == b[key][1], key
    for rec in Store(distributed).records("downstream"):  # the harness files, written by the worker into OUTPUT
        for rel in rec.results["files"].values():
            assert (distributed / rel).is_file(), rel
    again = cli(*common, "-o", distributed, "--ray-address", ray_address)
    assert again.code == 0 and "lm-eval on" not in again.stdout  # every checkpoint is stored: no task
