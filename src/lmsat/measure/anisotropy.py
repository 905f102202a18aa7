"""Anisotropy: the mean cosine similarity between distinct representations.

For representations h_1..h_n in R^d with unit vectors u_i = h_i / |h_i|::

    A = 1 / (n (n - 1)) * sum_{i != j} <u_i, u_j>
      = ( |sum_i u_i|^2 - n ) / ( n (n - 1) )

because |sum_i u_i|^2 = sum_i |u_i|^2 + sum_{i != j} <u_i, u_j> = n + sum_{i != j}.
The closed form costs O(n d) time and O(d) memory instead of O(n^2 d), and can
be accumulated over batches. A lies in [-1/(n-1), 1]: 1 when all vectors point
the same way, about 0 for isotropic (e.g. Gaussian) vectors.
Reference: Ethayarajh (2019); Godey et al. (2024), docs/methods.md §1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


_ROWS_PER_PARTIAL_SUM = 512


def _unit_sum(h: torch.Tensor) -> tuple[torch.Tensor, int, float]:
    """(sum of unit vectors, accumulated in float64; count; sum of norms) of the rows of ``h``.

    sum_i u_i = H^T (1 / |h_i|)_i is a matrix-vector product, so the unit vectors are never
    materialised: partial sums over blocks of 512 rows run in the input's precision (float32
    for half-precision inputs) and are accumulated in float64.
    """
    h = h.detach().reshape(-1, h.shape[-1])
    if h.dtype not in (torch.float32, torch.float64):
        h = h.float()
    norms = torch.linalg.vector_norm(h, dim=-1)
    inv = 1.0 / norms.clamp_min(torch.finfo(h.dtype).tiny)
    total = torch.zeros(h.shape[-1], dtype=torch.float64, device=h.device)
    for start in range(0, h.shape[0], _ROWS_PER_PARTIAL_SUM):
        stop = start + _ROWS_PER_PARTIAL_SUM
        total += (inv[start:stop] @ h[start:stop]).to(torch.float64)
    return total, int(h.shape[0]), float(norms.sum(dtype=torch.float64))


def anisotropy(h: torch.Tensor | np.ndarray) -> float:
    """Mean pairwise cosine similarity of the rows of ``h`` (n x d), exact closed form, float64.

    A = ( |sum_i u_i|^2 - n ) / ( n (n - 1) ), u_i = h_i / |h_i|. Needs n >= 2.
    """
    acc = AnisotropyAccumulator()
    acc.update(torch.as_tensor(h))
    return acc.value


def anisotropy_pairwise(h: torch.Tensor | np.ndarray) -> float:
    """The O(n^2 d) definition, for checking: mean of cos(h_i, h_j) over ordered pairs i != j."""
    h64 = torch.as_tensor(h).to(torch.float64)
    u = h64 / torch.linalg.vector_norm(h64, dim=-1, keepdim=True)
    sims = u @ u.T
    n = u.shape[0]
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


@dataclass
class AnisotropyAccumulator:
    """Streams the closed form over batches: keeps sum u_i (float64, d), n and sum |h_i|.

    Memory is O(d) however many vectors are added.
    """

    unit_sum: torch.Tensor | None = None
    n: int = 0
    norm_sum: float = 0.0
    _device: torch.device | None = field(default=None, repr=False)

    def update(self, h: torch.Tensor) -> None:
        """Add the rows of ``h`` (any leading shape, last dim d)."""
        s, n, norms = _unit_sum(h)
        self.unit_sum = s if self.unit_sum is None else self.unit_sum + s
        self.n += n
        self.norm_sum += norms

    @property
    def value(self) -> float:
        """The anisotropy A of everything added so far (NaN when n < 2)."""
        if self.unit_sum is None or self.n < 2:
            return float("nan")
        sq = float(torch.dot(self.unit_sum, self.unit_sum))
        return (sq - self.n) / (self.n * (self.n - 1))

    @property
    def mean_norm(self) -> float:
        """Mean Euclidean norm |h_i| of the vectors added."""
        return self.norm_sum / self.n if self.n else float("nan")
