"""`lmsat rank-probe --ray`: the (rank, learning rate) runs as tasks of a real local Ray instance give the
records of the single-process run (tiny random Llama, d = 32, on Brown text)."""

from __future__ import annotations

import pytest
import torch

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # ray.init + a tiny Llama probe twice: 272 s at load 10-11 on the 2-core sandbox

from tests.cli.test_rank_probe_cli import ARGS  # noqa: E402

from lmsat.experiments import rank_probe as rp  # noqa: E402
from lmsat.store import Store  # noqa: E402




def stored(out) -> dict[tuple[str, str], tuple[dict, dict, dict]]:
    """(kind, key) -> (inputs, results without timings, arrays) of every rank-probe record, through the Store."""
    out_recs = {}
    for kind in (rp.KIND, rp.REF_KIND):
        for rec in Store(out).records(kind):
            results = {k: v for k, v in rec.results.items() if k not in ("seconds", "train_tokens_per_s")}
            out_recs[(kind, rec.key)] = (rec.inputs, results, rec.load_arrays())
    return out_recs


def test_ray_rank_probe_gives_the_records_of_a_local_run(ray_address, cli, tiny_llama, brown_dir, tmp_path, monkeypatch):
    common = ["rank-probe", tiny_llama, "-d", brown_dir, "--ranks", "2,4", "--no-full-rank", "--head", "mos:2", *ARGS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the Ray tasks run one thread each (--cpus-per-task 1); both drivers too: the same float sums
    try:
        local = cli(*common, "-o", tmp_path / "local")
        res = cli(*common, "-o", tmp_path / "ray", "--ray-address", ray_address)
    finally:
        torch.set_num_threads(threads)
    assert local.code == 0, local.stderr
    assert res.code == 0, res.stderr
    assert "rank-probe on Ray (2 CPUs, 0 GPUs" in res.stdout
    a, b = stored(tmp_path / "local"), stored(tmp_path / "ray")
    # 2 heads (r = 2, 4) x (3 search runs: rate 0, 1e-2, 3e-2 + 1 final) + own head + SVD truncation
    assert len(a) == 2 * 4 + 2 and set(a) == set(b)
    for key, (ia, ra, xa) in a.items():
        ib, rb, xb = b[key]
        assert ia == ib and ra == rb, key  # exactly the same numbers
        assert set(xa) == set(xb) and all((xa[k] == xb[k]).all() for k in xa), key
    assert (tmp_path / "ray" / "rank_probe.csv").read_text() == (tmp_path / "local" / "rank_probe.csv").read_text()
    # a re-run over the finished directory (without Ray) trains nothing and keeps every record
    from lmsat.experiments.rank_probe import run as rp_run

    def no_training(*a, **kw):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(rp_run, "train_head", no_training)
    again = cli(*common, "-o", tmp_path / "ray")
    assert again.code == 0, again.stderr
    assert stored(tmp_path / "ray").keys() == b.keys()
