"""Rank-probe training speed against this machine's matmul throughput, and peak memory vs V.

1. Speed. A float32 matmul (1024 x 1024 x 1024, the baseline) is timed in this
   process; then, on synthetic features of SmolLM2's shape (d = 576,
   V = 49152), lmsat's ``train_head`` runs a few AdamW steps per rank. A
   rank-r step needs 6 r V + 4 r d FLOPs per token (forward h B^T and (h B^T) A^T,
   backward dA, dB and d(h B^T)); a plain full-rank matrix W needs 4 V d (forward and dW).
   Printed: tokens/s, the GFLOP/s those FLOPs amount to, and their ratio to the
   matmul baseline (1.0 = the probe runs at matmul speed; the softmax over V and
   the optimizer are extra work that the ratio charges to the probe).
2. Memory. For V = 8k, 32k, 128k, one training step of a rank-64 head on a
   batch of 2048 tokens, in a fresh subprocess each: lmsat's chunked step
   against the same step with the whole batch as one chunk (a 2048 x V logits
   matrix), the baseline. Printed: peak memory added by the step (CPU: peak RSS,
   VmHWM after resetting it through /proc/self/clear_refs, over the RSS after set-up; CUDA: torch.cuda.max_memory_allocated) and the
   ratio baseline / lmsat.

Run: ``python benchmarks/bench_rank_probe.py [--device cpu|cuda] [--steps 3]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

from lmsat.experiments.rank_probe import FeatureSplit, ProbeSettings, chunk_rows, train_head
from lmsat.nn.heads import make_head

D, V_SMOLLM2, SEQ = 576, 49152, 128


def matmul_gflops(device: str, n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def synthetic_split(n_seqs: int, d: int, vocab: int, seed: int = 0) -> FeatureSplit:
    rng = np.random.default_rng(seed)
    rows = SEQ - 1
    h = rng.standard_normal((n_seqs * rows, d), dtype=np.float32).astype(np.float16)
    y = rng.integers(0, vocab, n_seqs * rows).astype(np.int32)
    return FeatureSplit("train", h, y, rows)


def flops_per_token(rank: int | None, vocab: int, d: int) -> float:
    return 4.0 * vocab * d if rank is None else 6.0 * rank * vocab + 4.0 * rank * d


def speed(device: str, steps: int, batch_tokens: int) -> list[dict]:
    split = synthetic_split(16, D, V_SMOLLM2)
    settings = ProbeSettings(seq_len=SEQ, batch_tokens=batch_tokens, steps=steps)
    out = []
    for rank in (8, 32, 128, 512, D, None):  # None: the plain full-rank matrix W
        base = matmul_gflops(device)  # measured next to each rank: the machine is shared
        head = make_head("low-rank" if rank else "full-rank", V_SMOLLM2, D, rank, 1.0, seed=0)
        train_head(head, split, np.arange(split.n_seqs), 1, 1e-2, settings, device)  # warm-up
        _sync(device)
        res = train_head(head, split, np.arange(split.n_seqs), steps, 1e-2, settings, device)
        tok_s = res.tokens_seen / res.seconds
        achieved = tok_s * flops_per_token(rank, V_SMOLLM2, D) / 1e9
        out.append({"rank": rank or D, "head": "A B" if rank else "W", "tokens_per_s": tok_s,
                    "probe_gflops": achieved, "matmul_gflops": base, "ratio": achieved / base})
    return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the peak resident set size (Linux: write 5 to /proc/self/clear_refs); return the current RSS in bytes."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status_kb("VmRSS") * 1024


def memory_worker(vocab: int, mode: str, device: str) -> dict:
    """One rank-64 step on 2048 tokens; peak memory the step adds (bytes)."""
    split = synthetic_split(2048 // (SEQ - 1) + 1, D, vocab)
    n = split.n_seqs * split.rows_per_seq
    settings = ProbeSettings(seq_len=SEQ, batch_tokens=n, steps=1, chunk_tokens=0 if mode == "lmsat" else n)
    head = make_head("low-rank", vocab, D, 64, 1.0, seed=0)
    tiny = ProbeSettings(seq_len=SEQ, batch_tokens=1, steps=1, chunk_tokens=1)
    train_head(head, FeatureSplit("t", split.h[: SEQ - 1], split.y[: SEQ - 1], SEQ - 1), np.arange(1), 1, 1e-3, tiny, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _reset_peak_rss()
    t = time.perf_counter()
    train_head(head, split, np.arange(split.n_seqs), 1, 1e-3, settings, device)
    seconds = time.perf_counter() - t
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _status_kb("VmHWM") * 1024 - before
    chunk = chunk_rows(vocab, device, settings.chunk_tokens)
    return {"vocab": vocab, "mode": mode, "peak_bytes": peak, "seconds": seconds, "chunk_tokens": chunk, "tokens": n}


def memory(device: str) -> list[dict]:
    rows = []
    for vocab in (8192, 32768, 131072):
        pair = {}
        for mode in ("lmsat", "one-chunk"):
            proc = subprocess.run(
                [sys.executable, __file__, "--memory-worker", str(vocab), mode, "--device", device],
                capture_output=True, text=True, check=True, env={**os.environ, "LMSAT_PROGRESS": "0"},
            )
            pair[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"vocab": vocab, "lmsat_mb": pair["lmsat"]["peak_bytes"] / 2**20, "one_chunk_mb": pair["one-chunk"]["peak_bytes"] / 2**20,
                     "ratio": pair["one-chunk"]["peak_bytes"] / max(1, pair["lmsat"]["peak_bytes"]),
                     "chunk_tokens": pair["lmsat"]["chunk_tokens"], "tokens": pair["lmsat"]["tokens"],
                     "lmsat_s": pair["lmsat"]["seconds"], "one_chunk_s": pair["one-chunk"]["seconds"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-tokens", type=int, default=1016)
    parser.add_argument("--memory-worker", nargs=2, metavar=("V", "MODE"))
    args = parser.parse_args()
    os.environ.setdefault("LMSAT_PROGRESS", "0")
    if args.memory_worker:
        print(json.dumps(memory_worker(int(args.memory_worker[0]), args.memory_worker[1], args.device)))
        return
    print(f"machine: {os.cpu_count()} CPUs (nproc), torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"\nTraining speed, d = {D}, V = {V_SMOLLM2}, batches of {args.batch_tokens} tokens, {args.steps} steps")
    print(f"{'head':>5} {'r':>5} {'tokens/s':>10} {'probe GFLOP/s':>14} {'matmul GFLOP/s':>15} {'ratio':>6}")
    for row in speed(args.device, args.steps, args.batch_tokens):
        print(f"{row['head']:>5} {row['rank']:>5} {row['tokens_per_s']:>10.0f} {row['probe_gflops']:>14.1f} {row['matmul_gflops']:>15.1f} {row['ratio']:>6.2f}")
    print("\nPeak memory of one rank-64 training step (2032 tokens), lmsat (chunked) vs one chunk (whole logits matrix)")
    print(f"{'V':>7} {'chunk':>6} {'lmsat MB':>9} {'one-chunk MB':>13} {'ratio':>6} {'lmsat s':>8} {'one-chunk s':>12}")
    for row in memory(args.device):
        print(f"{row['vocab']:>7} {row['chunk_tokens']:>6} {row['lmsat_mb']:>9.0f} {row['one_chunk_mb']:>13.0f} {row['ratio']:>6.1f} {row['lmsat_s']:>8.2f} {row['one_chunk_s']:>12.2f}")


if __name__ == "__main__":
    main()
