"""lmsat: measure why a small language model stops improving.

Implements the measurements of Godey, de la Clergerie & Sagot, "Why do small
language models underperform? Studying Language Model Saturation via the
Softmax Bottleneck" (arXiv 2404.07647): saturation curves, scaling-law
extrapolation, anisotropy, LM-head spectrum, rank-constrained heads and the
inherent dimension of text.
"""

__version__ = "0.1.0"
