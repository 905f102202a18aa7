"""Faults: a sweep killed (SIGKILL) at random points resumes to the records of an uninterrupted run, and two
sweeps started together on one run directory split the checkpoints, each measured exactly once.

The sweeps run in forked children (the parent has imported torch already, so they start at once and
overlap); each child uses one torch thread.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

N_CKPTS = 6
WORDS = ("the of and to a in that is was he for it with as his on be at by had not are but from or have an they which one "
         "you were her all she there would their we him been has when who will more no if out so said what up its about").split()


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> tuple[Path, Path]:
    """(folder of step0..step7 checkpoints of a tiny GPT-NeoX with different random weights, a corpus file)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("faults")
    vocab = {"[UNK]": 0, "[EOS]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", eos_token="[EOS]")
    for step in range(N_CKPTS):
        torch.manual_seed(step)
        config = GPTNeoXConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=128, max_position_embeddings=64)
        folder = root / "m" / f"step{step}"
        GPTNeoXForCausalLM(config).save_pretrained(folder)
        tok.save_pretrained(folder)
    rng = np.random.default_rng(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS, 16)) for _ in range(2000)) + "\n")
    return root / "m", corpus


def sweep_argv(suite: tuple[Path, Path], out: Path) -> list[str]:
    models, corpus = suite
    return ["sweep", str(models), "-d", str(corpus), "--tokens", "2048", "--seq-len", "64", "--device", "cpu", "-o", str(out)]


def _child(argv: list[str], log: str) -> None:
    """Run ``lmsat ARGV`` in a forked child, stdout/stderr to ``log``; exit with its code."""
    import torch

    torch.set_num_threads(1)
    import sys

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)  # pytest's capture replaced sys.stdout
    os.environ["LMSAT_PROGRESS"] = "0"
    from lmsat.cli import main

    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    os._exit(code)


def start(argv: list[str], log: Path) -> multiprocessing.Process:
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(argv, str(log)))
    proc.start()
    return proc


def record_files(out: Path) -> list[Path]:
    return sorted((out / "sweep").glob("*.json"))


def comparable(out: Path) -> dict[str, tuple[dict, np.ndarray]]:
    """key -> (results without timings, singular values) of every sweep record."""
    got = {}
    for path in record_files(out):
        rec = json.loads(path.read_text())
        results = {k: v for k, v in rec["results"].items() if k not in ("wall_time_s",)}
        with np.load(path.with_suffix(".npz")) as arrays:
            got[rec["key"]] = (results, arrays["singular_values"])
    return got


@pytest.fixture(scope="module")
def reference(suite, tmp_path_factory) -> dict[str, tuple[dict, np.ndarray]]:
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = start(sweep_argv(suite, out), out.parent / "log")
    proc.join(300)
    assert proc.exitcode == 0, (out.parent / "log").read_text()[-2000:]
    got = comparable(out)
    assert len(got) == N_CKPTS and all(r["status"] == "ok" for r, _ in got.values())
    return got


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)  # nothing lost, nothing extra
    for key, (results, s) in want.items():
        assert got[key][0] == results, key  # bit-identical numbers (json floats round-trip exactly)
        np.testing.assert_array_equal(got[key][1], s)


def test_sweep_killed_at_random_points_resumes_with_nothing_lost_or_duplicated(suite, reference, tmp_path):
    out = tmp_path / "run"
    rng = random.Random(12)
    kills = []
    for attempt in range(3):
        have = len(record_files(out)) if (out / "sweep").is_dir() else 0
        if have >= N_CKPTS - 2:
            break
        target = rng.randint(have + 1, N_CKPTS - 2)  # kill once this many records exist, plus a random delay
        proc = start(sweep_argv(suite, out), tmp_path / f"log{attempt}")
        deadline = time.monotonic() + 300
        while proc.is_alive() and time.monotonic() < deadline and len(record_files(out)) < target:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.03))
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(60)
        kills.append((target, len(record_files(out)), proc.exitcode))
    assert any(code == -signal.SIGKILL and left < N_CKPTS for _, left, code in kills), f"no kill landed mid-sweep: {kills}"
    done_before = len(record_files(out))
    proc = start(sweep_argv(suite, out), tmp_path / "resume.log")
    proc.join(300)
    log = (tmp_path / "resume.log").read_text()
    assert proc.exitcode == 0, log[-2000:]
    assert f"measured {N_CKPTS - done_before} checkpoint(s)" in log
    assert len(record_files(out)) == N_CKPTS  # one record file per checkpoint
    assert_same(comparable(out), reference)
    assert not list((out / "sweep" / ".claims").glob("*.lock"))  # stale claims of the killed runs were taken over and released


def test_two_sweeps_on_one_run_directory_measure_every_checkpoint_exactly_once(suite, reference, tmp_path):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    procs = [start(sweep_argv(suite, out), tmp_path / f"log{i}") for i in range(2)]
    for proc in procs:
        proc.join(300)
    wall = time.perf_counter() - t0
    logs = [(tmp_path / f"log{i}").read_text() for i in range(2)]
    assert [p.exitcode for p in procs] == [0, 0], [log[-2000:] for log in logs]
    measured = [int(re.search(r"measured (\d+) checkpoint", log).group(1)) for log in logs]
    assert sum(measured) == N_CKPTS, (measured, wall)  # every checkpoint measured exactly once
    assert min(measured) >= 1, (measured, wall)  # the two processes really shared the work
    assert_same(comparable(out), reference)
