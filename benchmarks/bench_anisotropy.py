"""Benchmark: `lmsat anisotropy`'s one-pass reducer vs a plain transformers forward loop, and
the closed-form anisotropy vs the pairwise definition.

1. Tokens/s of lmsat.experiments.representations.representation_pass (all hidden states,
   per-layer float64 reduction, loss) against a plain loop `model(ids)` at the same batch
   size and dtype on the same tokens, alternated in the same process (goal: ratio >= 0.9).
2. Closed form O(n d) vs pairwise O(n^2 d) (blocked, float64) at n = 20,000, d = 768.

Usage: python benchmarks/bench_anisotropy.py [--model DIR] [--tokens N] [--repeats K]
(default model: SmolLM2-135M, fetched by lmsat fetch-assets)
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from lmsat import assets
from lmsat.experiments.representations import representation_pass
from lmsat.loading.corpus import CorpusSpec
from lmsat.loading.models import ModelSpec, load_model, load_model_tokenizer
from lmsat.loading.tokens import build_token_sample
from lmsat.measure.anisotropy import anisotropy


def plain_loop(model, ids: torch.Tensor, batch_size: int) -> None:
    with torch.inference_mode():
        for start in range(0, ids.shape[0], batch_size):
            model(input_ids=ids[start : start + batch_size], use_cache=False)


def pairwise_blocked(h: torch.Tensor, block: int = 2000) -> float:
    u = h.double() / h.double().norm(dim=1, keepdim=True)
    n = u.shape[0]
    total = 0.0
    for i in range(0, n, block):
        total += float((u[i : i + block] @ u.T).sum())
    return (total - n) / (n * (n - 1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    spec = ModelSpec(args.model or str(assets.smollm2_hf_path()), dtype=args.dtype)
    loaded = load_model(spec)
    tok = load_model_tokenizer(spec)
    sample = build_token_sample(CorpusSpec(str(assets.brown_path())), tok, args.tokens, args.seq_len, seed=0)
    ids = torch.from_numpy(sample.ids).to(loaded.device)
    plain_loop(loaded.model, ids[: args.batch_size], args.batch_size)  # warm-up
    t_plain, t_lmsat = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        plain_loop(loaded.model, ids, args.batch_size)
        t_plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        representation_pass(loaded, sample, batch_size=args.batch_size, layers="all", compute_loss=True)
        t_lmsat.append(time.perf_counter() - t)
    n = sample.n_tokens
    plain_tps, lmsat_tps = n / min(t_plain), n / min(t_lmsat)
    print(f"machine: {platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}, device {loaded.device}")
    print(f"model {spec.name} dtype {args.dtype}, {n} tokens, batch {args.batch_size} x {args.seq_len}, best of {args.repeats}")
    print(f"plain forward loop     : {plain_tps:9.1f} tokens/s")
    print(f"lmsat anisotropy pass  : {lmsat_tps:9.1f} tokens/s  (all {loaded.num_layers + 1} layers + loss)")
    print(f"ratio lmsat / plain    : {lmsat_tps / plain_tps:9.3f}   (goal >= 0.9)")

    rng = np.random.default_rng(0)
    h = torch.from_numpy(rng.normal(size=(20000, 768)).astype(np.float32) + 0.3)
    t = time.perf_counter()
    a_closed = anisotropy(h)
    t_closed = time.perf_counter() - t
    t = time.perf_counter()
    a_pair = pairwise_blocked(h)
    t_pair = time.perf_counter() - t
    print(f"anisotropy n=20000 d=768: closed form {t_closed:.3f} s, pairwise {t_pair:.2f} s, "
          f"speed-up x{t_pair / t_closed:.0f}, |difference| = {abs(a_closed - a_pair):.2e}")


if __name__ == "__main__":
    main()
