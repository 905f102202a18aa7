"""Training throughput of `lmsat train`'s loop vs a plain PyTorch loop, same model and batches.

Both train the same freshly initialised GPT-NeoX (same seed) on the same windows of a
synthetic language, batch by batch in the same order (lmsat's ``batch_indices``), with AdamW
and gradient clipping. The plain loop is the baseline: no learning-rate schedule, no
logging, no checkpoints. lmsat is measured two ways:

* loop: steady-state tokens/s between two log lines with no checkpoint in between
  (what the training loop itself costs: schedule, logging, progress bar);
* end to end: all steps including its log-spaced checkpoints (each one a held-out evaluation,
  a head SVD and an atomic save).

Runs are interleaved (plain, lmsat, plain) and the plain rate is their mean, because the
machine may be shared. Usage: ``python benchmarks/bench_train.py [--steps 200] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("LMSAT_PROGRESS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmsat.experiments.synth import write_language  # noqa: E402
from lmsat.synth.generator import LanguageSpec  # noqa: E402
from lmsat.training.train import (  # noqa: E402
    TrainConfig,
    batch_indices,
    build_model,
    checkpoint_steps,
    prepare_data,
    read_metrics,
    resolve_inputs,
    train_model,
)


def plain_loop(cfg: TrainConfig, windows: np.ndarray, vocab: int, eos: int, device: str) -> float:
    """Seconds for cfg.steps steps of a textbook loop (model built outside the timer)."""
    model = build_model(cfg, vocab, eos).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    start = time.perf_counter()
    for step in range(cfg.steps):
        x = torch.from_numpy(windows[batch_indices(step, cfg.batch_size, len(windows), cfg.seed)]).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def lmsat_run(cfg: TrainConfig, inputs, data, out: Path) -> tuple[float, float]:
    """(end-to-end seconds, steady-state loop tokens/s) of train_model."""
    start = time.perf_counter()
    train_model(cfg, inputs, data, out)
    total = time.perf_counter() - start
    rows = [r for r in read_metrics(out / cfg.model_name) if "train_loss" in r]
    ckpts = checkpoint_steps(cfg.steps, cfg.checkpoint_every)
    # the longest stretch of log lines with no checkpoint inside
    a = max(s for s in ckpts if s < cfg.steps)
    first = next(r for r in rows if r["step"] > a)
    last = [r for r in rows if r["step"] < cfg.steps][-1]
    steady = (last["step"] - first["step"]) * cfg.tokens_per_step / (last["elapsed_s"] - first["elapsed_s"])
    return total, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--hidden-sizes", default="32,128")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_language(LanguageSpec(vocab=256, contexts=256, rank=32), tmp / "lang", n_tokens=500_000, heldout_tokens=16384)
        base = TrainConfig(steps=args.steps, checkpoint_every=args.steps, warmup=10, device=args.device)
        inputs = resolve_inputs(tmp / "lang" / "corpus", tmp / "lang" / "tokenizer")
        data = prepare_data(inputs.corpus, inputs.tokenizer, base.seq_len, base.eval_tokens, inputs.eval_corpus)
        vocab, eos = inputs.tokenizer.vocab_size, inputs.tokenizer.eos_id
        print(f"device={args.device} threads={torch.get_num_threads()} nproc={os.cpu_count()} torch={torch.__version__} "
              f"steps={args.steps} batch={base.batch_size}x{base.seq_len} tokens/step={base.tokens_per_step}")
        print(f"{'d':>5} {'plain tok/s':>12} {'lmsat loop':>11} {'ratio':>6} {'lmsat e2e':>10} {'ratio':>6} {'ckpts':>6}")
        for d in (int(x) for x in args.hidden_sizes.split(",")):
            cfg = replace(base, hidden_size=d)
            tokens = cfg.steps * cfg.tokens_per_step
            p1 = plain_loop(cfg, data.train, vocab, eos, args.device)
            total, steady = lmsat_run(cfg, inputs, data, tmp / f"run-{d}")
            p2 = plain_loop(cfg, data.train, vocab, eos, args.device)
            plain = tokens / ((p1 + p2) / 2)
            n_ckpt = len(checkpoint_steps(cfg.steps, cfg.checkpoint_every))
            print(f"{d:>5} {plain:>12.0f} {steady:>11.0f} {steady / plain:>6.2f} {tokens / total:>10.0f} "
                  f"{tokens / total / plain:>6.2f} {n_ckpt:>6}")


if __name__ == "__main__":
    main()
