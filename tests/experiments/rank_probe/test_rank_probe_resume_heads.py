"""Rank probes with heads beyond the softmax (mos:K, sigsoftmax, mlp) resume after a crash: the re-run
trains only the missing runs and its records equal those of an uninterrupted run (tiny random Llama, d = 32)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.cli.test_rank_probe_cli import SETTINGS, _counter, _run

from lmsat.experiments import rank_probe as rp
from lmsat.experiments.rank_probe import run as rp_run
from lmsat.store import Store

SMALL = replace(SETTINGS, lr_grid=(1e-2,), full_rank=False)  # one rate, gaussian init: no search; one final run per rank (2 and 4)


def finals(out) -> dict[str, dict]:
    """key -> results (without timings) of every final run."""
    drop = ("seconds", "train_tokens_per_s")
    return {r.key: {k: v for k, v in r.results.items() if k not in drop}
            for k in (rp.KIND, rp.REF_KIND) for r in Store(out).records(k) if r.results.get("stage") == "final"}


@pytest.mark.parametrize("head", ["mos:2", "sigsoftmax", "mlp"])
def test_crash_then_rerun_gives_the_records_of_an_uninterrupted_run(head, tiny_llama, brown_dir, tmp_path, monkeypatch):
    settings = replace(SMALL, head=head)
    _run(tiny_llama, brown_dir, tmp_path / "clean", ranks=(2, 4), settings=settings)
    crashing = _counter(rp_run.train_head, fail_after=1)  # r = 2 finishes, r = 4 dies in training
    monkeypatch.setattr(rp_run, "train_head", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tiny_llama, brown_dir, tmp_path / "crashed", ranks=(2, 4), settings=settings)
    assert len(finals(tmp_path / "crashed")) == 1
    resumed = _counter(crashing.fn)
    monkeypatch.setattr(rp_run, "train_head", resumed)
    _run(tiny_llama, brown_dir, tmp_path / "crashed", ranks=(2, 4), settings=settings)
    assert resumed.calls == 1  # only r = 4 is trained again
    clean, again = finals(tmp_path / "clean"), finals(tmp_path / "crashed")
    assert len(clean) == 2 and clean.keys() == again.keys()
    assert all(f"|{head}|gaussian|" in k for k in clean)
    for key in clean:
        assert again[key] == clean[key], key  # same process, same threads: the same numbers exactly
        assert again[key]["head_function"] == head
