"""`lmsat train` killed with SIGKILL mid-run resumes from its newest checkpoint, exactly."""

from __future__ import annotations

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
from lmsat.store import Store
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
    record = Store(out).get("train", MODEL)
    assert record.results["steps"] == STEPS and record.results["checkpoints"][-1] == f"step{STEPS}"

    reference = tmp_path / "uninterrupted"
    _train_in_process(lang, reference)
    # the running-mean training loss of each log line, resumed mid-window or not, is the uninterrupted one
    assert [r["train_loss"] for r in rows if "train_loss" in r] == [
        r["train_loss"] for r in read_metrics(reference / MODEL) if "train_loss" in r]
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


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, cli) -> None:
    """The previous checkpoint keeps its training state until the next one is complete: a damaged
    newest checkpoint costs one warning line and a few steps, and the result is the uninterrupted one."""
    import torch

    lang = tmp_path / "lang"
    write_language(LanguageSpec(vocab=16, contexts=16, rank=4), lang, n_tokens=20_000, heldout_tokens=1024)
    args = ["train", "--data", lang / "corpus", "--tokenizer", lang / "tokenizer", "-o", tmp_path / "out", "--hidden-sizes", 8,
            "--layers", 1, "--heads", 2, "--seq-len", 16, "--batch-size", 4, "--steps", 30, "--warmup", 3,
            "--checkpoint-every", 12, "--log-every", 5, "--eval-tokens", 256, "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(*args).code == 0
        model_dir = tmp_path / "out" / MODEL
        with_state = sorted(int(p.parent.name[4:]) for p in model_dir.glob("step*/training_state.pt"))
        assert with_state == [24, 30]  # the newest two
        uninterrupted = _weights(model_dir / "step30")
        logged = [r for r in read_metrics(model_dir) if "train_loss" in r]
        # a run killed while its newest checkpoint was being damaged: torn weights, no record yet
        weights = model_dir / "step30" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        Store(tmp_path / "out").delete("train", MODEL)
        res = cli(*args)
    finally:
        torch.set_num_threads(threads)
    assert res.code == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("lmsat: warning:")]
    assert len(warnings) == 1 and "step30" in warnings[0] and "step 24" in warnings[0]
    assert "Traceback" not in res.stderr
    for name, value in _weights(model_dir / "step30").items():
        np.testing.assert_array_equal(value, uninterrupted[name], err_msg=name)
    # the log lines past step 24 were written again, with the same running means (the window 20-25 spans the resume)
    assert [(r["step"], r["train_loss"]) for r in read_metrics(model_dir) if "train_loss" in r] == \
        [(r["step"], r["train_loss"]) for r in logged]


def test_a_mixture_of_softmaxes_head_trains_records_its_cost_and_resumes_exactly(tmp_path: Path, cli) -> None:
    """`lmsat train --head mos:2`: the head's own parameters are checkpointed and a resume rebuilds them."""
    import torch

    lang = tmp_path / "lang"
    write_language(LanguageSpec(vocab=16, contexts=16, rank=4), lang, n_tokens=20_000, heldout_tokens=1024)
    args = ["train", "--data", lang / "corpus", "--tokenizer", lang / "tokenizer", "-o", tmp_path / "out", "--hidden-sizes", 8,
            "--layers", 1, "--heads", 2, "--seq-len", 16, "--batch-size", 4, "--steps", 12, "--warmup", 2,
            "--checkpoint-every", 6, "--log-every", 4, "--eval-tokens", 256, "--device", "cpu", "--head", "mos:2"]
    name = "gpt-neox-d8-l1-mos2"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(*args).code == 0
        rec = Store(tmp_path / "out").get("train", name)
        V, d, K = 17, 8, 2  # 16 words + eos
        assert rec.results["head"] == "mos:2"
        assert rec.results["head_parameters"] == d * (V + d) + (d * K + K) + K * d * d + K * d
        assert rec.results["head_flops_per_token"] == 2 * K * d * d + 2 * K * d + K * 2 * d * (V + d)
        final = _weights(tmp_path / "out" / name / "step12")
        assert {"embed_out.prior.weight", "embed_out.proj", "embed_out.out.A"} <= set(final)
        import shutil

        shutil.rmtree(tmp_path / "out" / name / "step12")
        Store(tmp_path / "out").delete("train", name)
        assert cli(*args).code == 0
    finally:
        torch.set_num_threads(threads)
    for key, value in _weights(tmp_path / "out" / name / "step12").items():
        np.testing.assert_array_equal(value, final[key], err_msg=key)


def test_a_frozen_random_head_keeps_its_flat_spectrum(tmp_path: Path, cli) -> None:
    """--head-init random --freeze-head (an intervention for issue 17): the head never moves and has rank d."""
    import torch

    lang = tmp_path / "lang"
    write_language(LanguageSpec(vocab=16, contexts=16, rank=4), lang, n_tokens=10_000, heldout_tokens=1024)
    args = ["train", "--data", lang / "corpus", "--tokenizer", lang / "tokenizer", "-o", tmp_path / "out", "--hidden-sizes", 8,
            "--layers", 1, "--heads", 2, "--seq-len", 16, "--batch-size", 4, "--steps", 6, "--warmup", 1,
            "--checkpoint-every", 6, "--eval-tokens", 256, "--device", "cpu", "--head-init", "random", "--freeze-head"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(*args).code == 0
    finally:
        torch.set_num_threads(threads)
    folder = tmp_path / "out" / "gpt-neox-d8-l1-random-head-frozen-head"
    first, last = _weights(folder / "step0"), _weights(folder / "step6")
    np.testing.assert_array_equal(first["embed_out.weight"], last["embed_out.weight"])
    assert not np.array_equal(first["gpt_neox.embed_in.weight"], last["gpt_neox.embed_in.weight"])  # the rest trains
    s = np.linalg.svd(last["embed_out.weight"].astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(s, s[0], rtol=1e-5)
    assert np.sqrt((s**2).sum()) == pytest.approx(0.02 * np.sqrt(17 * 8), rel=1e-5)


def test_spectral_penalty_is_one_minus_the_normalised_singular_entropy() -> None:
    import torch

    from lmsat.training.model import spectral_penalty

    class Model(torch.nn.Module):
        def __init__(self, w: np.ndarray) -> None:
            super().__init__()
            self.head = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            with torch.no_grad():
                self.head.weight.copy_(torch.from_numpy(w))

        def get_output_embeddings(self) -> torch.nn.Module:
            return self.head

    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((30, 4)))
    v, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    s = np.array([3.0, 2.0, 1.0, 0.5])
    q = s**2 / (s**2).sum()
    expected = 1 - (-(q * np.log(q)).sum()) / np.log(4)
    assert float(spectral_penalty(Model((u * s) @ v.T)).detach()) == pytest.approx(expected, rel=1e-5)
    assert float(spectral_penalty(Model(u @ v.T)).detach()) == pytest.approx(0.0, abs=1e-6)
