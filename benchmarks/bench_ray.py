"""`lmsat sweep --ray` against the local sweep, in one run: ratio, per-task overhead, 1 vs 2 workers, Pythia projection.

1. Writes a local suite of K checkpoints of one GPT-NeoX model (d=256, 4 layers,
   SmolLM2's 49,152-token vocabulary: ~60 MB each, as benchmarks/bench_sweep.py).
2. Sweeps it (fresh run directory each time, same process, same token sample):
   * local, ``run_sweep`` with prefetch (the baseline: what `lmsat sweep` does);
   * Ray with 1 worker (a local Ray instance with 1 CPU, 1 CPU per task);
   * Ray with 2 workers (a local Ray instance with 2 CPUs, 1 CPU per task).
   Every task runs in a fresh worker (max_calls=1), as `--ray` does. All runs use
   one torch thread per process (OMP_NUM_THREADS=1) so 1 vs 2 workers compares
   like with like. It checks that the Ray records equal the local ones.
3. Per-task overhead = (Ray 1-worker wall - local wall) / K: what a task costs
   beyond the measurement (worker start, imports, object transfer).
4. Pythia projection: per-checkpoint time = load+hash + forward + head SVD, each
   measured here on GPT-NeoX models with the Pythia shapes (random weights:
   the cost does not depend on the values) and a reduced token count, scaled
   to 50,000 tokens; GPU numbers are an assumption stated in the output.

    python benchmarks/bench_ray.py [--checkpoints 8] [--tokens 4096]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LMSAT_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["OMP_NUM_THREADS"] = "1"

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sweep import write_suite

# Pythia (arXiv 2304.01373, Table 1): hidden size, layers, heads, parameters
PYTHIA = {
    "14m": (128, 6, 4, 14_067_712), "31m": (256, 6, 8, 30_494_720), "70m": (512, 6, 8, 70_426_624),
    "160m": (768, 12, 12, 162_322_944), "410m": (1024, 24, 16, 405_334_016), "1b": (2048, 16, 8, 1_011_781_632),
    "1.4b": (2048, 24, 16, 1_414_647_808), "2.8b": (2560, 32, 32, 2_775_208_960), "6.9b": (4096, 32, 32, 6_857_302_016),
    "12b": (5120, 36, 40, 11_846_072_320),
}
PYTHIA_VOCAB = 50_304


def plan_and_settings(suite: Path, out: Path, data: Path, tokens: int):
    from lmsat.experiments.sweep import SweepSettings, plan_sweep
    from lmsat.loading.checkpoints import expand_sweep
    from lmsat.loading.corpus import CorpusSpec

    corpus = CorpusSpec(source=str(data))
    settings = SweepSettings(n_tokens=tokens, seq_len=256, device="cpu", batch_size=8)
    plan = plan_sweep(expand_sweep([str(suite / "bench-model")]), corpus, out, settings)
    return plan, corpus, settings


def local_sweep(suite: Path, out: Path, data: Path, tokens: int) -> float:
    from lmsat.experiments.sweep import run_sweep

    plan, corpus, settings = plan_and_settings(suite, out, data, tokens)
    t0 = time.perf_counter()
    run_sweep(plan, corpus, out, settings)
    return time.perf_counter() - t0


def ray_sweep(suite: Path, out: Path, data: Path, tokens: int, cpus: int) -> float:
    import ray

    from lmsat.executor import RayExecutor, Resources
    from lmsat.experiments.sweep_ray import run_sweep_distributed

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        plan, corpus, settings = plan_and_settings(suite, out, data, tokens)
        t0 = time.perf_counter()
        run_sweep_distributed(plan, corpus, out, settings, RayExecutor(), Resources(cpus=1))
        return time.perf_counter() - t0
    finally:
        ray.shutdown()


def same_records(a: Path, b: Path) -> bool:
    import numpy as np

    from lmsat.store import Store

    ra = {r.key: r for r in Store(a).records("sweep")}
    rb = {r.key: r for r in Store(b).records("sweep")}
    if set(ra) != set(rb):
        return False
    for k in ra:
        xa = {n: v for n, v in ra[k].results.items() if n != "wall_time_s"}
        xb = {n: v for n, v in rb[k].results.items() if n != "wall_time_s"}
        if ra[k].inputs != rb[k].inputs or set(xa) != set(xb):
            return False
        for n, v in xa.items():
            if isinstance(v, float) and not np.isclose(v, xb[n], rtol=1e-6, atol=1e-9):
                return False
            if not isinstance(v, float) and v != xb[n]:
                return False
        if not np.allclose(ra[k].load_arrays()["singular_values"], rb[k].load_arrays()["singular_values"], rtol=1e-6):
            return False
    return True


def pythia_costs(sizes: list[str], tokens: int) -> list[tuple[str, float, float, float]]:
    """(size, load+hash s, forward s per 1,000 tokens, head SVD s) for random GPT-NeoX models of Pythia shapes."""
    import numpy as np
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from lmsat.experiments.sweep import weights_hashes
    from lmsat.loading.models import lm_head_weight
    from lmsat.measure.spectrum import singular_values

    torch.set_num_threads(1)
    rows = []
    for size in sizes:
        d, layers, heads, _ = PYTHIA[size]
        cfg = GPTNeoXConfig(vocab_size=PYTHIA_VOCAB, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=4 * d, max_position_embeddings=2048, tie_word_embeddings=False)
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            GPTNeoXForCausalLM(cfg).save_pretrained(tmp)
            t0 = time.perf_counter()
            model = GPTNeoXForCausalLM.from_pretrained(tmp).eval()
            weights_hashes(model)
            load = time.perf_counter() - t0
        ids = torch.from_numpy(np.random.default_rng(0).integers(0, PYTHIA_VOCAB, (tokens // 256, 256)))
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(ids), 4):
                model(input_ids=ids[i : i + 4], output_hidden_states=True)
        fwd = (time.perf_counter() - t0) / (ids.numel() / 1000)
        t0 = time.perf_counter()
        singular_values(lm_head_weight(model)[0])
        svd = time.perf_counter() - t0
        rows.append((size, load, fwd, svd))
        del model
    return rows


def sweep_part(suite: Path, root: Path, data: Path, k: int, tokens: int) -> None:
    t_local = local_sweep(suite, root / "local", data, tokens)
    t_ray1 = ray_sweep(suite, root / "ray1", data, tokens, cpus=1)
    t_ray2 = ray_sweep(suite, root / "ray2", data, tokens, cpus=2)
    ok = same_records(root / "local", root / "ray1") and same_records(root / "local", root / "ray2")
    print(f"\nsweep of {k} checkpoints (d=256, 4 layers, V=49,152), {tokens} tokens each, 1 torch thread per process")
    print(f"  local (prefetch)  : {t_local:7.1f} s  ({60 * k / t_local:.1f} ckpt/min)")
    print(f"  Ray, 1 worker     : {t_ray1:7.1f} s  ({60 * k / t_ray1:.1f} ckpt/min)  ratio Ray/local {t_ray1 / t_local:.2f}")
    print(f"  Ray, 2 workers    : {t_ray2:7.1f} s  ({60 * k / t_ray2:.1f} ckpt/min)  speed-up 2 vs 1 worker {t_ray1 / t_ray2:.2f}x")
    print(f"  per-task overhead : {(t_ray1 - t_local) / k:+.2f} s per checkpoint (Ray 1 worker - local, incl. Ray start-up)")
    print(f"  records identical to the local sweep: {ok}")


def pythia_part(sizes: list[str], tokens: int) -> None:
    rows = pythia_costs(sizes, tokens)
    print(f"\nper-checkpoint CPU cost (1 thread) of Pythia shapes, random weights, forward measured on {tokens} tokens:")
    print("  size    load+hash s  fwd s/1k tok  head SVD s  => s/ckpt @50k tokens  => CPU-hours for 154 ckpts")
    per_param_fwd = []
    for size, load, fwd, svd in rows:
        per_ckpt = load + 50 * fwd + svd
        per_param_fwd.append(fwd / PYTHIA[size][3])
        print(f"  {size:6s} {load:11.2f} {fwd:13.3f} {svd:11.2f} {per_ckpt:22.1f} {154 * per_ckpt / 3600:24.1f}")
    rate = sorted(per_param_fwd)[len(per_param_fwd) // 2]
    load_rate = sorted(4 * PYTHIA[size][3] / load for size, load, _, _ in rows)[len(rows) // 2]  # fp32 bytes/s
    n_all = sum(p[3] for p in PYTHIA.values())
    flops = 2 * n_all * 50_000 * 154
    fwd_cpu_h = 154 * 50 * rate * n_all / 3600
    io_h = 154 * 4 * n_all / load_rate / 3600
    print(f"  forward: {rate * 1e9:.3f} s per 1k tokens per 1e9 parameters on one core; load+hash: {load_rate / 1e9:.2f} GB/s (fp32), medians")
    print(f"  Pythia 14m..12b x 154 checkpoints x 50k tokens ({n_all / 1e9:.1f}e9 parameters summed over the 10 sizes):")
    print(f"    forward on this CPU, one core: {fwd_cpu_h:,.0f} core-hours;  load+hash at the measured rate: {io_h:,.1f} hours")
    for tflops in (50, 200):
        print(f"    on GPUs (ASSUMED {tflops} TFLOP/s effective, 2*N FLOPs/token): forward {flops / tflops / 1e12 / 3600:.1f} GPU-hours"
              f" + load+hash {io_h:.1f} h (CPU side, measured rate) + downloads {154 * 2 * n_all / 1e12:.1f} TB (fp16 on the hub)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--pythia-sizes", default="14m,70m,160m")
    ap.add_argument("--pythia-tokens", type=int, default=1024)
    ap.add_argument("--skip-sweep", action="store_true", help="only the Pythia per-checkpoint costs")
    args = ap.parse_args()

    from lmsat import assets

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        if not args.skip_sweep:
            suite = write_suite(root / "suite", args.checkpoints, 256, 4)
            sweep_part(suite, root, assets.brown_path(), args.checkpoints, args.tokens)
        sizes = [s for s in args.pythia_sizes.split(",") if s]
        if sizes:  # --pythia-sizes "": the sweep comparison only
            pythia_part(sizes, args.pythia_tokens)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load at the end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
