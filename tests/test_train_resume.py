"""`lmsat train` killed with SIGKILL mid-run resumes from its newest checkpoint, exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lmsat.experiments.synth import write_language
from lmsat.synth.generator import LanguageSpec
from lmsat.training.train import checkpoint_steps, read_metrics

STEPS, EVERY = 300, 50
MODEL = "gpt-neox-d8-l1"


def _command(lang: Path, out: Path) -> list[str]:
    args = ["train", "--data", lang / "corpus", "--tokenizer", lang / "tokenizer", "-o", out, "--hidden-sizes", 8,
            "--layers", 1, "--heads", 2, "--seq-len", 32, "--batch-size", 8, "--steps", STEPS, "--warmup", 20,
            "--checkpoint-every", EVERY, "--eval-tokens", 512, "--device", "cpu"]
    return [sys.executable, "-m", "lmsat", *map(str, args)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "LMSAT_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}


def _train_in_process(lang: Path, out: Path) -> None:
    """The same command, uninterrupted, in this process with one thread like the subprocesses."""
    import torch

    from lmsat.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(_command(lang, out)[3:])
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        torch.set_num_threads(threads)


def _weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
def test_resume_after_kill_continues_the_step_count_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    lang = tmp_path / "lang"
    write_language(LanguageSpec(vocab=16, contexts=16, rank=4), lang, n_tokens=40_000, heldout_tokens=2048)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(lang, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (out / MODEL / "step16").is_dir():
        assert proc.poll() is None, f"training exited early: {proc.stderr.read().decode()[-500:]}"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    at_kill = sorted(int(p.name[4:]) for p in (out / MODEL).glob("step*"))
    assert STEPS not in at_kill, "training finished before the kill; make the run longer"
    assert 16 in at_kill

    resumed = subprocess.run(_command(lang, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    model_dir = out / MODEL
    assert sorted(int(p.name[4:]) for p in model_dir.glob("step*")) == checkpoint_steps(STEPS, EVERY)
    assert not list(model_dir.glob(".tmp-*"))
    rows = read_metrics(model_dir)
    # one log line per 10 steps and one eval line per checkpoint: nothing repeated, nothing missing
    assert [r["step"] for r in rows if "train_loss" in r] == list(range(10, STEPS + 1, 10))
    assert [r["step"] for r in rows if "eval_loss" in r] == checkpoint_steps(STEPS, EVERY)
    record = json.loads((out / "train" / f"{MODEL}.json").read_text())
    assert record["results"]["steps"] == STEPS and record["results"]["checkpoints"][-1] == f"step{STEPS}"

    reference = tmp_path / "uninterrupted"
    _train_in_process(lang, reference)
    # Same batches, same schedule, same optimizer state: the resumed weights are the uninterrupted ones.
    for step in (at_kill[-1], STEPS):
        a, b = _weights(model_dir / f"step{step}"), _weights(reference / MODEL / f"step{step}")
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6, err_msg=name)
    ref_rows = {r["step"]: r for r in read_metrics(reference / MODEL) if "eval_loss" in r}
    for r in rows:
        if "eval_loss" in r:
            assert r["eval_loss"] == pytest.approx(ref_rows[r["step"]]["eval_loss"], abs=1e-6)
