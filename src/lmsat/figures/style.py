"""One plotting style for every lmsat figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lmsat.store import atomic_savefig  # noqa: E402

DPI = 130


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.2, **kw: Any) -> tuple[Any, Any]:
    """A figure in lmsat's style; ``width``/``height`` per panel, in inches."""
    plt.rcParams.update(
        {
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.size": 10,
            "legend.fontsize": 8,
            "legend.frameon": False,
        }
    )
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)


def save(fig: Any, path: str | Path) -> Path:
    """Save atomically as PNG and close the figure."""
    path = Path(path)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=DPI)
    plt.close(fig)
    return path


def model_label(inputs: dict[str, Any]) -> str:
    name = str(inputs.get("model", "?")).rstrip("/")
    short = name.split("/")[-1] if "/" in name else name
    if inputs.get("gguf_file"):
        short = Path(str(inputs["gguf_file"])).stem
    rev = inputs.get("revision")
    return f"{short}@{rev}" if rev else short
