"""`lmsat report` on a study-sized sweep: how its time compares with just reading the records.

Writes a run directory of synthetic records shaped like the study's sweep (M models x K
checkpoints, each with its LM head's d singular values; saturation records; an n-gram
record), then, alternating in one process:

* baseline: read every record and its arrays (``Store.records`` + ``load_arrays``), the I/O
  floor any report must pay;
* ``build_report`` to HTML (diagnosis, figures re-drawn from stored numbers, CSV tables);
* ``build_report`` to Markdown.

Prints the median seconds of each and the ratio report / baseline. The records are test data
(random spectra), marked ``inputs.test_data``; only timings are measured.

    python benchmarks/bench_report.py [--models 5] [--checkpoints 154] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LMSAT_PROGRESS", "0")


def write_runs(root: Path, models: int, checkpoints: int) -> Path:
    import numpy as np

    from lmsat.store import Store

    rng = np.random.default_rng(0)
    store = Store(root)
    dims = [128, 256, 512, 768, 1024, 2048, 2048, 2560, 4096, 5120][:models]
    steps = sorted({0, *[2**i for i in range(10)], *range(1000, 143_001, 1000)})[:checkpoints]
    for m, d in enumerate(dims):
        name = f"EleutherAI/pythia-bench{m}"
        for j, step in enumerate(steps):
            s = np.sort(rng.gamma(2.0, 1.0, d))[::-1] * (1 + 20 * (j > len(steps) * 0.6))
            store.put("sweep", f"{name}@step{step}", {"test_data": True, "model": name, "revision": f"step{step}", "step": step},
                      {"status": "ok", "cross_entropy": 3 + 4 / (1 + j) + 0.001 * j, "last_layer_anisotropy": min(0.99, 0.1 + j / len(steps)),
                       "singular_entropy": float(np.log(d) * j / len(steps)), "hidden_size": d, "n_params": d * d * 100},
                      arrays={"singular_values": s})
    s = np.sqrt(np.exp(-np.arange(4000) / 600))
    store.put("ngram", "bench|tok|n=5", {"test_data": True, "corpus": {"source": "bench"}, "n": 5},
              {"dims_for_w_error": {"0.5": 415, "0.1": 1380}, "frobenius_norm": float(np.linalg.norm(s)), "complete": True},
              arrays={"singular_values": s})
    return root


def read_all(run: Path) -> int:
    from lmsat.report import load_records

    n = 0
    for recs in load_records([run]).values():
        for rec in recs:
            rec.load_arrays()
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--checkpoints", type=int, default=154)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from lmsat.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        run = write_runs(Path(tmp) / "run", args.models, args.checkpoints)
        n = read_all(run)  # warm-up: imports and page cache
        build_report([run], Path(tmp) / "warm.html")
        times: dict[str, list[float]] = {"read records (baseline)": [], "report HTML": [], "report Markdown": []}
        for i in range(args.repeats):
            t = time.perf_counter()
            read_all(run)
            times["read records (baseline)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            out = build_report([run], Path(tmp) / f"r{i}.html")
            times["report HTML"].append(time.perf_counter() - t)
            t = time.perf_counter()
            build_report([run], Path(tmp) / f"r{i}.md")
            times["report Markdown"].append(time.perf_counter() - t)
        size = out.path.stat().st_size
    base = statistics.median(times["read records (baseline)"])
    print(f"machine: {platform.machine()}, nproc={os.cpu_count()}, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    print(f"{n} records ({args.models} models x {args.checkpoints} checkpoints + n-gram), HTML report {size / 1e6:.2f} MB")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:26s} median {med:7.2f} s   ratio to baseline {med / base:6.2f}")


if __name__ == "__main__":
    main()
