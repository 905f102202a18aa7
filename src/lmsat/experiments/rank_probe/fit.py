"""Training and evaluating one head on cached features (AdamW, warm-up + cosine, chunked logits)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmsat.experiments.rank_probe.features import FeatureSplit
from lmsat.experiments.rank_probe.settings import (
    _EVAL_ROWS,
    AUTO_CHUNK_LOGITS,
    AUTO_MIN_CHUNK_TOKENS,
    ProbeSettings,
)
from lmsat.nn.heads import ProbeHead
from lmsat.progress import track
from lmsat.training.schedule import warmup_cosine

# --- training and evaluation ------------------------------------------------------------------


def lr_factor(step: int, steps: int, warmup_frac: float, min_lr_frac: float) -> float:
    """Learning-rate multiplier at update ``step`` (0-based) of ``steps``: :func:`warmup_cosine`
    with a warm-up of ceil(warmup_frac * steps) updates, decaying to ``min_lr_frac``."""
    return warmup_cosine(step, steps, math.ceil(warmup_frac * steps), min_lr_frac)


def chunk_rows(vocab_size: int, device: str, chunk_tokens: int = 0) -> int:
    """Tokens per logits chunk: ``chunk_tokens``, or (0) AUTO_CHUNK_LOGITS[device] / V, at least AUTO_MIN_CHUNK_TOKENS."""
    if chunk_tokens > 0:
        return chunk_tokens
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return max(AUTO_MIN_CHUNK_TOKENS[kind], AUTO_CHUNK_LOGITS[kind] // vocab_size)


def _batches(seqs: np.ndarray, batch_seqs: int, seed: int) -> Iterator[np.ndarray]:
    """Endless batches of windows: seeded random order, reshuffled every epoch."""
    rng = np.random.default_rng([seed, 3])
    pool: list[int] = []
    while True:
        if len(pool) < batch_seqs:
            pool.extend(rng.permutation(seqs).tolist())
        batch, pool = pool[:batch_seqs], pool[batch_seqs:]
        yield np.asarray(batch)


def _autocast(device: str) -> Any:
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@dataclass
class TrainResult:
    train_loss: float  # mean loss of the last max(1, steps // 10) batches, nats/token
    steps: int
    tokens_seen: int
    seconds: float
    diverged: bool


def train_head(
    head: ProbeHead,
    split: FeatureSplit,
    seqs: np.ndarray,
    steps: int,
    lr: float,
    settings: ProbeSettings,
    device: str,
    seed: int = 0,
    description: str = "train",
) -> TrainResult:
    """Train ``head`` on windows ``seqs`` of ``split``: AdamW (beta 0.9, 0.95), warm-up + cosine.

    Each batch is split into chunks of :func:`chunk_rows` tokens whose gradients
    accumulate, so at most one chunk of (tokens x V) logits exists at a time.
    Stops early (``diverged``) if the loss becomes NaN or infinite.
    """
    head.to(device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps, settings.warmup_frac, settings.min_lr_frac)
    )
    chunk = chunk_rows(head.vocab_size * head.logit_copies, device, settings.chunk_tokens)
    batches = _batches(np.asarray(seqs), min(settings.batch_seqs, len(seqs)), seed)
    tail = max(1, steps // 10)
    losses: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    diverged = False
    for _ in track(range(steps), description):
        h, y = split.tensors(next(batches), device)
        n = len(y)
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for start in range(0, n, chunk):
            with _autocast(device):
                loss, _ = head.nll(h[start : start + chunk], y[start : start + chunk])
            (loss / n).backward()
            total += loss.detach()
        value = float(total) / n
        if not math.isfinite(value):
            diverged = True
            break
        losses.append(value)
        opt.step()
        sched.step()
        tokens += n
    head.eval()
    train_loss = float(np.mean(losses[-tail:])) if losses and not diverged else float("inf")
    return TrainResult(train_loss, len(losses), tokens, time.perf_counter() - t0, diverged)


@torch.no_grad()
def evaluate_head(
    head: ProbeHead, split: FeatureSplit, seqs: np.ndarray, device: str, chunk_tokens: int = 0
) -> dict[str, Any]:
    """Held-out loss (nats/token), its standard error, perplexity exp(loss) and top-1 accuracy on windows ``seqs``.

    ``nll``: the per-token -ln p(y_t | h_t) (float32), kept for paired comparisons
    between heads evaluated on the same tokens; ``loss_se`` = std(nll) / sqrt(n).
    """
    head.to(device).eval()
    chunk = chunk_rows(head.vocab_size * head.logit_copies, device, chunk_tokens)
    per_block = max(1, _EVAL_ROWS // split.rows_per_seq)
    parts: list[np.ndarray] = []
    correct = 0
    for first in range(0, len(seqs), per_block):
        h, y = split.tensors(seqs[first : first + per_block], device)
        for start in range(0, len(y), chunk):
            nll, hit = head.token_nll(h[start : start + chunk], y[start : start + chunk])
            parts.append(nll.float().cpu().numpy())
            correct += int(hit.sum())
    nll_all = np.concatenate(parts)
    n = len(nll_all)
    loss = float(nll_all.astype(np.float64).mean())
    return {
        "loss": loss,
        "loss_se": float(nll_all.std(dtype=np.float64) / math.sqrt(n)),
        "perplexity": math.exp(min(loss, 700.0)),
        "accuracy": correct / n,
        "n_tokens": n,
        "nll": nll_all,
    }

