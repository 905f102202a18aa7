"""Checkpoints per minute of `lmsat sweep` over local checkpoints, with and without background prefetch.

Writes a local suite of K checkpoints of one GPT-NeoX model (d=256, 4 layers,
SmolLM2's 49,152-token vocabulary, so a checkpoint is ~60 MB and loading +
hashing it costs about as much as measuring it), then sweeps it alternately
with --no-prefetch (the baseline) and --prefetch into fresh run directories,
in the same process, and prints checkpoints/minute side by side and their
ratio. It also checks that both modes store the same numbers.

Two scenarios: checkpoints read from the local disk (page cache warm), and the
same with a simulated fetch latency per checkpoint (``--fetch-latency`` seconds
of sleep in the loader, a stand-in for downloading a hub revision, which is
what prefetch is for on a GPU machine; the sleep holds no CPU).

    python benchmarks/bench_sweep.py [--checkpoints 6] [--repeats 2] [--tokens 2048] [--fetch-latency 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LMSAT_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_suite(root: Path, k: int, d: int, layers: int) -> Path:
    import torch
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    from lmsat import assets

    tok = AutoTokenizer.from_pretrained(assets.smollm2_hf_path())
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=d, num_hidden_layers=layers, num_attention_heads=8,
                        intermediate_size=4 * d, max_position_embeddings=512, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg)
    for i in range(k):
        with torch.no_grad():  # a different checkpoint each time, as training would give
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        folder = root / "bench-model" / f"step{1000 * i}"
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return root


def sweep_once(suite: Path, out: Path, data: Path, tokens: int, prefetch: bool, latency: float = 0.0) -> tuple[float, dict[str, float]]:
    import lmsat.experiments.sweep as sweep_module
    from lmsat.experiments.sweep import SweepSettings, plan_sweep, run_sweep
    from lmsat.loading.checkpoints import expand_sweep
    from lmsat.loading.corpus import CorpusSpec
    from lmsat.store import Store

    corpus = CorpusSpec(source=str(data))
    settings = SweepSettings(n_tokens=tokens, seq_len=256, device="cpu", prefetch=prefetch)
    plan = plan_sweep(expand_sweep([str(suite)]), corpus, out, settings)
    # the token sample is built before timing (shared by every checkpoint in both modes)
    from lmsat.loading.tokens import get_token_sample

    tok = next(iter(plan.tokenizers.values()))
    get_token_sample(out, corpus, tok, settings.n_tokens, plan.seq_len, settings.seed)
    real_load = sweep_module.load_checkpoint

    def slow_load(*a, **kw):  # type: ignore[no-untyped-def]
        time.sleep(latency)
        return real_load(*a, **kw)

    sweep_module.load_checkpoint = slow_load
    try:
        t0 = time.perf_counter()
        summary = run_sweep(plan, corpus, out, settings)
        wall = time.perf_counter() - t0
    finally:
        sweep_module.load_checkpoint = real_load
    losses = {r.key.rsplit("@", 1)[1]: r.results["cross_entropy"] for r in Store(out).records("sweep")}
    return 60.0 * summary.measured / wall, losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--fetch-latency", type=float, default=3.0)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from lmsat import assets

    hf_logging.set_verbosity_error()
    data = assets.brown_path()
    work = Path(tempfile.mkdtemp(prefix="lmsat-bench-sweep-"))
    try:
        suite = write_suite(work / "suite", args.checkpoints, args.hidden, args.layers)
        size_mb = sum(f.stat().st_size for f in suite.rglob("*.safetensors")) / args.checkpoints / 1e6
        # warm-up: first-time imports and the page cache, outside the timings
        sweep_once(suite, work / "warm", data, args.tokens, prefetch=False)
        print(f"machine: {platform.machine()}, nproc {os.cpu_count()}, torch {torch.__version__}, torch threads {torch.get_num_threads()}")
        print(f"suite: {args.checkpoints} checkpoints of GPT-NeoX d={args.hidden}, {args.layers} layers, V=49152 "
              f"({size_mb:.0f} MB each); {args.tokens} tokens per checkpoint; {args.repeats} alternating repeats")
        for latency in (0.0, args.fetch_latency):
            rates: dict[bool, list[float]] = {False: [], True: []}
            results = {}
            for rep in range(args.repeats):
                for prefetch in (False, True):
                    rate, losses = sweep_once(suite, work / f"run-{latency}-{rep}-{prefetch}", data, args.tokens, prefetch, latency)
                    rates[prefetch].append(rate)
                    results[prefetch] = losses
            assert results[False] == results[True], "prefetch changed the stored numbers"
            base, pre = (sum(rates[m]) / len(rates[m]) for m in (False, True))
            where = "local disk" if latency == 0 else f"local disk + {latency:g} s simulated fetch per checkpoint"
            print(f"\n{where}")
            print(f"  {'mode':<24}{'checkpoints/min':>18}   per repeat")
            print(f"  {'--no-prefetch (baseline)':<24}{base:>18.1f}   {', '.join(f'{r:.1f}' for r in rates[False])}")
            print(f"  {'--prefetch':<24}{pre:>18.1f}   {', '.join(f'{r:.1f}' for r in rates[True])}")
            print(f"  ratio prefetch / baseline: {pre / base:.2f}x  (stored losses identical in both modes)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
