"""The singular spectrum of a matrix (an LM head W in R^{V x d}, or an n-gram matrix P).

With singular values s_1 >= ... >= s_k >= 0 (k = min(V, d)):

* normalised spectrum: s_i / s_1;
* singular value distribution p: p_i = s_i^2 / sum_j s_j^2 ("squared", default;
  the share of squared Frobenius norm, which fits the study's plotted values) or
  p_i = s_i / sum_j s_j ("linear");
* singular entropy: KL(p || uniform_k) = ln k - H(p), in nats, in [0, ln k]:
  0 for a flat spectrum, ln k for a rank-1 matrix (docs/methods.md §3);
* effective rank: exp(H(p)), in [1, k] (Roy & Vetterli, 2007);
* W-error(d) = sqrt( sum_{i > d} s_i^2 ) / |M|_F, the smallest relative
  Frobenius error of any rank-d approximation (Eckart-Young-Mirsky), in [0, 1],
  1 at d = 0, 0 at full rank, non-increasing (docs/methods.md §4).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Normalization = Literal["squared", "linear"]
NORMALIZATIONS: tuple[str, ...] = ("squared", "linear")


def singular_values(w: torch.Tensor | np.ndarray) -> np.ndarray:
    """All singular values of ``w`` (float64, descending), computed in float64 on w's device."""
    t = torch.as_tensor(w).detach()
    if t.ndim != 2:
        raise ValueError(f"singular_values needs a matrix, got shape {tuple(t.shape)}")
    s = torch.linalg.svdvals(t.to(torch.float64))
    return s.cpu().numpy()


def singular_value_distribution(s: np.ndarray, normalization: Normalization = "squared") -> np.ndarray:
    """p_i = s_i^2 / sum s^2 ("squared") or s_i / sum s ("linear")."""
    s = np.asarray(s, dtype=np.float64)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    mass = s * s if normalization == "squared" else s.copy()
    total = mass.sum()
    if total <= 0:
        raise ValueError("the spectrum is all zeros")
    return mass / total


def _entropy(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def singular_entropy(s: np.ndarray, normalization: Normalization = "squared") -> float:
    """KL(p || uniform over k) = ln k - H(p) in nats, k = len(s); in [0, ln k]."""
    p = singular_value_distribution(s, normalization)
    return float(max(0.0, np.log(len(p)) - _entropy(p)))


def effective_rank(s: np.ndarray, normalization: Normalization = "squared") -> float:
    """exp(H(p)), in [1, k]."""
    return float(np.exp(_entropy(singular_value_distribution(s, normalization))))


def normalized_spectrum(s: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """s_i / s_1 for i = 1..top_k (all when None)."""
    s = np.asarray(s, dtype=np.float64)
    out = s / s[0] if s[0] > 0 else np.zeros_like(s)
    return out[:top_k] if top_k is not None else out


def w_error_curve(s: np.ndarray, frobenius_norm: float | None = None) -> np.ndarray:
    """W-error(d) for d = 0..len(s): sqrt(sum_{i>d} s_i^2) / |M|_F.

    When only the top singular values are known, pass the exact ``frobenius_norm``
    of the matrix: the tail is then |M|_F^2 - sum_{i<=d} s_i^2 (clipped at 0), and
    the curve ends above 0 if mass remains beyond the computed values.
    """
    s = np.asarray(s, dtype=np.float64)
    sq = s * s
    total = float(sq.sum()) if frobenius_norm is None else float(frobenius_norm) ** 2
    if total <= 0:
        raise ValueError("the matrix is all zeros")
    head = np.concatenate([[0.0], np.cumsum(sq)])
    if frobenius_norm is None:
        # Sum the tail directly (from the smallest values up) for accuracy near 0.
        tail = np.concatenate([np.cumsum(sq[::-1])[::-1], [0.0]])
    else:
        tail = np.clip(total - head, 0.0, None)
    return np.sqrt(np.clip(tail / total, 0.0, 1.0))


def w_error(s: np.ndarray, d: int, frobenius_norm: float | None = None) -> float:
    """W-error at one dimension d (0 <= d <= len(s))."""
    curve = w_error_curve(s, frobenius_norm)
    if not 0 <= d < len(curve):
        raise ValueError(f"d must be in [0, {len(curve) - 1}], got {d}")
    return float(curve[d])


def dimension_for_w_error(s: np.ndarray, threshold: float, frobenius_norm: float | None = None) -> int | None:
    """Smallest d with W-error(d) <= threshold (None if no computed d reaches it)."""
    curve = w_error_curve(s, frobenius_norm)
    hits = np.nonzero(curve <= threshold)[0]
    return int(hits[0]) if len(hits) else None
