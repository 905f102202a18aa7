"""The learning-rate schedule shared by `lmsat train` and `lmsat rank-probe`."""

from __future__ import annotations

import math


def warmup_cosine(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier at update ``step`` (0-based) of ``steps``.

    Linear warm-up (step + 1) / warmup for step < warmup, then cosine decay from 1 to
    ``min_ratio``: m + (1 - m) (1 + cos(pi t)) / 2 with t = min(1, (step - warmup) / (steps - warmup)).
    """
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, steps - warmup)
    t = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
