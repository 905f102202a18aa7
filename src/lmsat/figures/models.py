"""Figures of single-model measurements: anisotropy by depth (Fig. 2), head spectrum and W-error.

Drawn from the stored records only (:mod:`lmsat.kinds.anisotropy`, :mod:`lmsat.kinds.head`):
nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmsat.figures.style import model_label, new_figure, save
from lmsat.kinds.anisotropy import AnisotropyRecord
from lmsat.kinds.base import as_kind
from lmsat.kinds.head import HeadRecord
from lmsat.store import Record


def plot_anisotropy_by_depth(records: list[Record] | list[AnisotropyRecord], path: str | Path) -> Path:
    """Anisotropy vs normalised layer depth, one line per model (the study's Fig. 2)."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    for rec in (as_kind(r, AnisotropyRecord) for r in records):
        layers = rec.layers
        ax.plot([x["depth"] for x in layers], [x["anisotropy"] for x in layers], marker="o", ms=3, label=model_label(rec.inputs))
    ax.set_xlabel("normalised layer depth (0 = embeddings, 1 = last layer)")
    ax.set_ylabel("anisotropy (mean cosine similarity)")
    ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.02)
    ax.set_title("Anisotropy across layers")
    ax.legend()
    return save(fig, path)


def plot_head_spectrum(records: list[Record] | list[HeadRecord], path: str | Path) -> Path:
    """Normalised singular values s_i / s_1 of each LM head, log scale."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    for rec in (as_kind(r, HeadRecord) for r in records):
        s = rec.singular_values()
        label = f"{model_label(rec.inputs)} (KL={rec.singular_entropy:.2f})"
        ax.plot(np.arange(1, len(s) + 1), s / s[0], label=label)
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("s_i / s_1")
    ax.set_title("LM-head singular spectrum (normalised)")
    ax.legend()
    return save(fig, path)


def plot_head_w_error(records: list[Record] | list[HeadRecord], path: str | Path) -> Path:
    """W-error(r) of each LM head vs rank r, as stored with the head's record."""
    fig, axes = new_figure()
    ax = axes[0, 0]
    for rec in (as_kind(r, HeadRecord) for r in records):
        curve = rec.w_error_curve()
        ax.plot(np.arange(len(curve)), curve, label=model_label(rec.inputs))
    ax.set_xlabel("rank r of the approximation")
    ax.set_ylabel("W-error(r) = |W - W_r|_F / |W|_F")
    ax.set_ylim(0, 1.02)
    ax.set_title("Best rank-r approximation error of the LM head")
    ax.legend()
    return save(fig, path)
