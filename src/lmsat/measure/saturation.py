"""Saturation of a loss curve over training: best, final and relative rise (docs/methods.md §5).

The one implementation, used by ``lmsat saturation``, the downstream checkpoint
selection, ``lmsat train``'s record and the report. The onset of a rise (collapse,
anisotropy jump) is :func:`lmsat.measure.onsets.rise_onset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def best_final_rise(steps: Sequence[int], losses: Sequence[float]) -> dict[str, Any]:
    """Best step/loss, final step/loss and the relative rise of one model's loss curve.

    best = argmin loss (the earliest step on ties); final = the last step;
    relative_rise = L_final / L_best - 1 (0 when the last checkpoint is the best).
    ``steps`` need not be sorted; every loss must be finite.
    """
    s = np.asarray(steps, dtype=np.int64)
    loss = np.asarray(losses, dtype=np.float64)
    if len(s) == 0:
        raise ValueError("no checkpoints")
    order = np.argsort(s, kind="stable")
    s, loss = s[order], loss[order]
    b = int(np.argmin(loss))
    return {
        "best_step": int(s[b]),
        "best_loss": float(loss[b]),
        "final_step": int(s[-1]),
        "final_loss": float(loss[-1]),
        "relative_rise": float(loss[-1] / loss[b] - 1.0),
    }

