"""Measurements: small pure functions over arrays, the formula in each docstring."""

from lmsat.measure.anisotropy import AnisotropyAccumulator, anisotropy, anisotropy_pairwise
from lmsat.measure.spectrum import (
    effective_rank,
    normalized_spectrum,
    singular_entropy,
    singular_value_distribution,
    singular_values,
    w_error,
    w_error_curve,
)

__all__ = [
    "AnisotropyAccumulator",
    "anisotropy",
    "anisotropy_pairwise",
    "effective_rank",
    "normalized_spectrum",
    "singular_entropy",
    "singular_value_distribution",
    "singular_values",
    "w_error",
    "w_error_curve",
]
