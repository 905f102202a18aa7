"""Time per training step of each head (lmsat.nn.beyond) against the plain softmax head, at SmolLM2's shape.

On synthetic features (d = 576, V = 49152, float32), one AdamW step of lmsat's
``train_head`` (chunked logits, as the rank probe runs it) is timed for each head with the
same rank r and batch; the baseline is the plain softmax head (W = A B), and a textbook
``torch.nn.Linear`` + ``F.cross_entropy`` full-rank step is printed next to it as the
strongest plain-PyTorch reference. Heads are timed in interleaved rounds (softmax, mos:4,
... then again), so a machine whose load changes affects all heads alike; the median over
rounds is reported, with its ratio to the softmax head. On CUDA the matmul peak
(a 4096^3 float32/TF32 matmul) is printed and each head's throughput in matmul-FLOP/s
against it.

Run: ``python benchmarks/bench_heads.py [--device cpu|cuda] [--rounds 3] [--tokens 256] [--rank 576]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("LMSAT_PROGRESS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmsat.experiments.rank_probe import FeatureSplit, ProbeSettings, train_head  # noqa: E402
from lmsat.nn.beyond import HeadSpec, build_head  # noqa: E402

D, V = 576, 49152
HEADS = ("softmax", "mos:4", "sigsoftmax", "mlp")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def split(tokens: int, seq: int, seed: int = 0) -> FeatureSplit:
    rng = np.random.default_rng(seed)
    n_seqs = max(2, -(-tokens // (seq - 1)))
    h = rng.standard_normal((n_seqs * (seq - 1), D), dtype=np.float32)
    y = rng.integers(0, V, n_seqs * (seq - 1)).astype(np.int32)
    return FeatureSplit("train", h, y, seq - 1)


def time_head(spec: str, data: FeatureSplit, settings: ProbeSettings, rank: int, device: str) -> float:
    """Seconds per step: two steps, minus one step (set-up and the first step's allocations excluded)."""
    head = build_head(HeadSpec.parse(spec), V, D, rank, 1.0, seed=1)
    seqs = np.arange(data.n_seqs)
    train_head(head, data, seqs, 1, 1e-3, settings, device)  # warm-up
    _sync(device)
    t = time.perf_counter()
    train_head(head, data, seqs, 2, 1e-3, settings, device)
    _sync(device)
    return (time.perf_counter() - t) / 2


def time_textbook(data: FeatureSplit, device: str) -> float:
    """A plain nn.Linear(d, V) + cross_entropy AdamW step on the same batch (whole batch, one chunk)."""
    lin = torch.nn.Linear(D, V, bias=False).to(device)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-3)
    h, y = data.tensors(np.arange(data.n_seqs), device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(lin(h), y).backward()
        opt.step()

    step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(2):
        step()
    _sync(device)
    return (time.perf_counter() - t) / 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rank", type=int, default=D)
    args = ap.parse_args()
    seq = 128
    data = split(args.tokens, seq)
    settings = ProbeSettings(seq_len=seq, batch_tokens=args.tokens, steps=2, init="gaussian")
    times: dict[str, list[float]] = {h: [] for h in (*HEADS, "textbook nn.Linear")}
    for _ in range(args.rounds):
        for spec in HEADS:
            times[spec].append(time_head(spec, data, settings, args.rank, args.device))
        times["textbook nn.Linear"].append(time_textbook(data, args.device))
    base = statistics.median(times["softmax"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        flops = None
        if name in HEADS:
            flops = 3 * build_head(HeadSpec.parse(name), V, D, args.rank).flops_per_token() * data.n_rows / data.n_seqs * settings.batch_seqs
        rows.append({"head": name, "s_per_step": round(med, 4), "ratio_to_softmax": round(med / base, 3),
                     "gflop_per_s": round(flops / med / 1e9, 2) if flops else None})
    peak = None
    if args.device.startswith("cuda"):
        a = torch.randn(4096, 4096, device=args.device)
        a @ a
        _sync(args.device)
        t = time.perf_counter()
        for _ in range(10):
            a @ a
        _sync(args.device)
        peak = 2 * 4096**3 * 10 / (time.perf_counter() - t) / 1e9
    print(json.dumps({"device": args.device, "V": V, "d": D, "rank": args.rank, "tokens_per_step": settings.batch_seqs * (seq - 1),
                      "threads": torch.get_num_threads(), "matmul_peak_gflops": peak, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
