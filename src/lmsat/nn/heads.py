"""Heads trained on frozen representations: W = A B of rank <= r, and a full-rank W.

Initialisation (why the scale). The study draws the entries of A and B from
N(0, 1); with representations of d coordinates of root-mean-square rho, the
initial logits z = A (B h) would then have standard deviation sqrt(r d) rho
(several hundred for r = 64, d = 576): a saturated softmax and a first update
that diverges. Here every entry of A and of B is drawn from N(0, sigma^2) with

    sigma = (r d rho^2)^(-1/4)

so each coordinate of B h has variance d rho^2 sigma^2 and each logit
z_v = sum_j A_vj (B h)_j has variance r sigma^2 d rho^2 sigma^2 = 1: the logits
start O(1) (standard deviation 1) whatever r, d and the scale of the features.
A and B get the same entry scale on purpose: AdamW moves every entry by about
the learning rate per step, so equal scales make both factors change at the
same relative rate (with A ~ N(0, 1/r) and B ~ N(0, 1/(d rho^2)) instead, B's
entries are ~15x smaller than A's for r = 8, d = 576 and SmolLM2's rho ~ 1.8, and
a learning rate that moves A at all scrambles B; on SmolLM2 features a rank-8
head then stayed near the uniform loss ln V after 20 steps, while this
initialisation reached 8.1 nats in the same budget). rho is measured on the training representations
and passed as ``feature_rms``. The full-rank head uses
W_vk ~ N(0, 1 / (d rho^2)), the same logit scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmsat.errors import UserError


class ProbeHead(nn.Module):
    """A head mapping representations (n, d) to next-token logits (n, V).

    Subclasses define :meth:`forward`; a head whose distribution is not
    ``softmax(forward(h))`` (a mixture of softmaxes, ...) overrides :meth:`token_nll`.
    """

    vocab_size: int
    hidden_size: int

    @property
    def rank(self) -> int:
        """The largest rank of the head's logit map."""
        raise NotImplementedError

    def token_nll(self, h: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(-ln p(y_t | h_t) per token in nats, float32 (n,); whether the top-1 prediction is y_t, bool (n,)).

        ``h``: (n, d) float, ``targets``: (n,) int64. The log-softmax is taken in
        float32 even under autocast. Heads whose distribution is not
        ``softmax(forward(h))`` override this method.
        """
        logits = self(h).float()
        nll = nn.functional.cross_entropy(logits, targets, reduction="none")
        return nll, logits.detach().argmax(dim=-1) == targets

    def nll(self, h: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum over tokens of -ln p(y_t | h_t) in nats, number of correct top-1 predictions)."""
        per_token, correct = self.token_nll(h, targets)
        return per_token.sum(), correct.sum()

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    #: (tokens x V) logit tensors a forward holds at once per token (K for a mixture of K softmaxes).
    logit_copies: int = 1

    def output_matrix(self) -> torch.Tensor:
        """The (V, d) matrix of the head's linear output map (A B, or W)."""
        raise NotImplementedError

    def flops_per_token(self) -> int:
        """Multiply-add FLOPs (2 per multiply-add) of one token's forward, matrix products only."""
        raise NotImplementedError


class LowRankHead(ProbeHead):
    """W = A B with A: (V, r), B: (r, d); logits = A (B h), so rank(W) <= r.

    Cost per token: 2 r (V + d) multiply-adds forward, not 2 V d.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        rank: int,
        feature_rms: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_rank(rank, vocab_size, hidden_size)
        if not feature_rms > 0:
            raise ValueError(f"feature_rms must be > 0, got {feature_rms}")
        self.vocab_size, self.hidden_size, self._rank = vocab_size, hidden_size, rank
        self.feature_rms = float(feature_rms)
        sigma = init_sigma(rank, hidden_size, self.feature_rms)
        a = torch.randn(vocab_size, rank, generator=generator) * sigma
        b = torch.randn(rank, hidden_size, generator=generator) * sigma
        self.A = nn.Parameter(a)
        self.B = nn.Parameter(b)
        self.bias: nn.Parameter | None = None

    @property
    def rank(self) -> int:
        return self._rank

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = (h @ self.B.T) @ self.A.T
        return z if self.bias is None else z + self.bias

    def weight(self) -> torch.Tensor:
        """The (V, d) matrix A B (materialised; for analysis, not for training)."""
        return self.A @ self.B

    def output_matrix(self) -> torch.Tensor:
        return self.weight()

    def flops_per_token(self) -> int:
        return 2 * self._rank * (self.vocab_size + self.hidden_size)

    @torch.no_grad()
    def set_factors(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Set A (V, r), B (r, d) and the logit bias (V,) or None (e.g. from :func:`svd_factors`)."""
        self.A.copy_(a)
        self.B.copy_(b)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().float())

    def extra_repr(self) -> str:
        return f"V={self.vocab_size}, d={self.hidden_size}, r={self._rank}, feature_rms={self.feature_rms:.4g}"


class FullRankHead(ProbeHead):
    """An unconstrained (V, d) head W: rank min(V, d), the reference of the rank probe."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        feature_rms: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not feature_rms > 0:
            raise ValueError(f"feature_rms must be > 0, got {feature_rms}")
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.feature_rms = float(feature_rms)
        w = torch.randn(vocab_size, hidden_size, generator=generator) / (math.sqrt(hidden_size) * self.feature_rms)
        self.W = nn.Parameter(w)
        self.bias: nn.Parameter | None = None

    @property
    def rank(self) -> int:
        return min(self.vocab_size, self.hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = h @ self.W.T
        return z if self.bias is None else z + self.bias

    def weight(self) -> torch.Tensor:
        return self.W

    def output_matrix(self) -> torch.Tensor:
        return self.W

    def flops_per_token(self) -> int:
        return 2 * self.vocab_size * self.hidden_size

    @torch.no_grad()
    def set_weight(self, w: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Set W (V, d) and the logit bias (V,) or None."""
        self.W.copy_(w)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().float())

    def extra_repr(self) -> str:
        return f"V={self.vocab_size}, d={self.hidden_size}, feature_rms={self.feature_rms:.4g}"


def init_sigma(rank: int, hidden_size: int, feature_rms: float) -> float:
    """Entry standard deviation of A and B: (r d rho^2)^(-1/4), so logits start with variance 1."""
    return (rank * hidden_size * feature_rms**2) ** -0.25


def check_rank(rank: int, vocab_size: int, hidden_size: int, model: str | None = None) -> None:
    """A rank must be in [1, min(V, d)]: a rank-r head with r > d has no more capacity than rank d.

    lmsat's one rank check (the heads and ``lmsat rank-probe``'s plan); ``model`` names the model in the message.
    """
    limit = min(vocab_size, hidden_size)
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= limit:
        raise UserError(
            f"--ranks {rank} is outside [1, {limit}]{f' for {model}' if model else ''} (hidden size d = {hidden_size}, "
            f"vocabulary V = {vocab_size}): a head W = A B with r > d has no more rank than d; choose ranks between 1 and {limit}."
        )


def make_head(
    kind: str,
    vocab_size: int,
    hidden_size: int,
    rank: int | None = None,
    feature_rms: float = 1.0,
    seed: int = 0,
) -> ProbeHead:
    """A freshly initialised head: ``kind`` is "low-rank" (needs ``rank``) or "full-rank"."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "low-rank":
        if rank is None:
            raise ValueError("a low-rank head needs a rank")
        return LowRankHead(vocab_size, hidden_size, rank, feature_rms, generator=gen)
    if kind == "full-rank":
        return FullRankHead(vocab_size, hidden_size, feature_rms, generator=gen)
    raise ValueError(f"unknown head kind {kind!r}; expected 'low-rank' or 'full-rank'")
