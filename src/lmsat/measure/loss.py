"""Next-token cross-entropy without materialising more logits than needed.

cross-entropy (nats/token) = mean_t [ logsumexp(z_t) - z_t[y_t] ], z_t = W h_t.
Computed over chunks of tokens so a (tokens x V) matrix never exists at once.
"""

from __future__ import annotations

import torch


def chunked_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_tokens: int = 4096,
    reduction: str = "sum",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum or mean of -log p(y_t | h_t), number of correct top-1 predictions).

    ``h``: (n, d) representations, ``weight``: (V, d) head, ``targets``: (n,) ids.
    Logits are formed ``chunk_tokens`` rows at a time, in float32 or better.
    """
    total = torch.zeros((), dtype=torch.float64, device=h.device)
    correct = torch.zeros((), dtype=torch.int64, device=h.device)
    for start in range(0, h.shape[0], chunk_tokens):
        hc = h[start : start + chunk_tokens]
        logits = hc @ weight.T
        if bias is not None:
            logits = logits + bias
        logits = logits.float()
        y = targets[start : start + chunk_tokens]
        total = total + torch.nn.functional.cross_entropy(logits, y, reduction="sum").to(torch.float64)
        correct = correct + (logits.argmax(dim=-1) == y).sum()
    if reduction == "mean":
        total = total / max(1, h.shape[0])
    return total, correct


def logits_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """(sum of -log p(y_t) in nats, token count) for logits (..., V) and targets (...)."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    y = targets.reshape(-1)
    return float(torch.nn.functional.cross_entropy(flat, y, reduction="sum")), int(y.numel())


def next_token_cross_entropy(logits: torch.Tensor, ids: torch.Tensor) -> tuple[float, int]:
    """(sum of -log p(x_{t+1} | x_<=t) in nats, count) for logits (B, L, V) of sequences ``ids`` (B, L).

    The last position of each sequence has no target and is ignored; no shifted copy of the
    logits is made.
    """
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    total = torch.nn.functional.cross_entropy(flat, targets.reshape(-1), ignore_index=-100, reduction="sum")
    return float(total), int(ids.shape[0] * (ids.shape[1] - 1))
