"""Heads beyond a linear softmax (the study's suggested remedies), and the SVD initialisation.

Every head maps representations h (..., d) to "logits" z (..., V) whose softmax is the
head's next-token distribution, so one cross-entropy serves all of them (and a head can
replace a Hugging Face model's output embedding). Each has a linear output map
W = A B (A: V x r, B: r x d, rank <= r; r = d for an unconstrained head) with an
optional bias b:

* ``softmax`` (:class:`lmsat.nn.heads.LowRankHead`): p = softmax(W h + b).
* ``mos:K`` (:class:`MixtureOfSoftmaxes`, Yang et al. 2018, "Breaking the softmax
  bottleneck"): p = sum_k pi_k(h) softmax(W h_k + b), with mixture weights
  pi(h) = softmax(P_pi h + c_pi) (K) and component contexts h_k = tanh(P_k h + c_k) (d).
  log p is returned (its softmax is p itself). The rank of log p over contexts is not
  bounded by r.
* ``sigsoftmax`` (:class:`SigSoftmax`, Kanai et al. 2018): with z = W h + b,
  p_i = exp(z_i) sigmoid(z_i) / sum_j exp(z_j) sigmoid(z_j); returned as z + log sigmoid(z).
* ``mlp`` (:class:`MLPHead`): p = softmax(W g + b) with the non-linear projection
  g = h + M_2 gelu(M_1 h + c_1) (M_1: m x d, M_2: d x m, m = d); M_2 starts at 0, so the
  head starts as the plain softmax head.

SVD initialisation (:func:`svd_factors`): with the model's own head W = U S V^T (the
tied input embedding when the model ties them), A = U_r S_r^{1/2} and B = S_r^{1/2} V_r^T,
so A B is the best rank-r approximation of W in Frobenius norm (Eckart-Young) and at
r = d the probe starts exactly at the model's own head (its bias included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lmsat.errors import UserError
from lmsat.nn.heads import FullRankHead, LowRankHead, ProbeHead

HEAD_KINDS: tuple[str, ...] = ("softmax", "mos", "sigsoftmax", "mlp")
INITS: tuple[str, ...] = ("svd", "gaussian")
# E[tanh(x)^2]^(1/2) for x ~ N(0, 1): the scale of a MoS component context at initialisation.
_TANH_RMS = 0.6278


@dataclass(frozen=True)
class HeadSpec:
    """A head named as on the command line: ``softmax``, ``mos:K``, ``sigsoftmax`` or ``mlp``."""

    kind: str = "softmax"
    components: int = 1

    @classmethod
    def parse(cls, text: str, option: str = "--head") -> HeadSpec:
        name, _, arg = str(text).strip().partition(":")
        if name not in HEAD_KINDS:
            raise UserError(f"{option} must be one of softmax, mos:K, sigsoftmax, mlp (got '{text}').")
        if name == "mos":
            try:
                k = int(arg)
            except ValueError:
                raise UserError(f"{option} mos needs its number of components, e.g. mos:4 (got '{text}').") from None
            if not 2 <= k <= 64:
                raise UserError(f"{option} mos:K needs 2 <= K <= 64 (got '{text}').")
            return cls("mos", k)
        if arg:
            raise UserError(f"{option} {name} takes no ':' argument (got '{text}').")
        return cls(name)

    @property
    def label(self) -> str:
        return f"mos:{self.components}" if self.kind == "mos" else self.kind


class MixtureOfSoftmaxes(ProbeHead):
    """p(y | h) = sum_k pi_k(h) softmax(W tanh(P_k h + c_k) + b)_y, pi(h) = softmax(P_pi h + c_pi).

    Yang et al. 2018. ``out`` is the shared output map W (rank <= r) with its bias;
    forward returns log p (..., V), whose softmax is p.
    """

    def __init__(self, out: LowRankHead | FullRankHead, components: int, generator: torch.Generator | None = None,
                 context_scale: float = 1.0) -> None:
        super().__init__()
        d, k = out.hidden_size, components
        self.vocab_size, self.hidden_size, self.components = out.vocab_size, d, k
        self.logit_copies = k
        self.out = out
        self.prior = nn.Linear(d, k)  # P_pi, c_pi
        nn.init.normal_(self.prior.weight, std=0.01 / math.sqrt(d), generator=generator)
        nn.init.zeros_(self.prior.bias)
        # P_k = context_scale * (I + noise): close to a scaled identity, different per component
        eye = torch.eye(d).expand(k, d, d)
        noise = torch.randn(k, d, d, generator=generator) * (0.1 / math.sqrt(d))
        self.proj = nn.Parameter((eye + noise) * context_scale)
        self.proj_bias = nn.Parameter(torch.zeros(k, d))

    @property
    def rank(self) -> int:
        return self.out.rank

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        log_pi = torch.log_softmax(_at_least_float32(self.prior(h)), dim=-1)  # (..., K)
        contexts = torch.tanh(torch.einsum("...d,ked->...ke", h, self.proj) + self.proj_bias)  # (..., K, d)
        log_components = torch.log_softmax(_at_least_float32(self.out(contexts)), dim=-1)  # (..., K, V)
        return torch.logsumexp(log_pi.unsqueeze(-1) + log_components, dim=-2)

    def output_matrix(self) -> torch.Tensor:
        return self.out.output_matrix()

    def flops_per_token(self) -> int:
        d, k = self.hidden_size, self.components
        return 2 * k * d * d + 2 * k * d + k * self.out.flops_per_token()


class SigSoftmax(ProbeHead):
    """p_i = exp(z_i) sigmoid(z_i) / sum_j exp(z_j) sigmoid(z_j), z = W h + b (Kanai et al. 2018).

    forward returns z + log sigmoid(z), whose softmax is p.
    """

    def __init__(self, out: LowRankHead | FullRankHead) -> None:
        super().__init__()
        self.vocab_size, self.hidden_size = out.vocab_size, out.hidden_size
        self.out = out

    @property
    def rank(self) -> int:
        return self.out.rank

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = _at_least_float32(self.out(h))
        return z + nn.functional.logsigmoid(z)

    def output_matrix(self) -> torch.Tensor:
        return self.out.output_matrix()

    def flops_per_token(self) -> int:
        return self.out.flops_per_token()


class MLPHead(ProbeHead):
    """p = softmax(W g + b), g = h + M_2 gelu(M_1 h + c_1): a non-linear projection before the softmax.

    M_1: (m, d), M_2: (d, m), m = ``width`` (default d). M_2 starts at zero, so the head
    starts as ``out`` itself.
    """

    def __init__(self, out: LowRankHead | FullRankHead, width: int | None = None, generator: torch.Generator | None = None,
                 feature_rms: float = 1.0) -> None:
        super().__init__()
        d = out.hidden_size
        m = width or d
        self.vocab_size, self.hidden_size, self.width = out.vocab_size, d, m
        self.out = out
        self.up = nn.Linear(d, m)
        nn.init.normal_(self.up.weight, std=1.0 / (math.sqrt(d) * feature_rms), generator=generator)
        nn.init.zeros_(self.up.bias)
        self.down = nn.Linear(m, d, bias=False)
        nn.init.zeros_(self.down.weight)

    @property
    def rank(self) -> int:
        return self.out.rank

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(h + self.down(nn.functional.gelu(self.up(h))))

    def output_matrix(self) -> torch.Tensor:
        return self.out.output_matrix()

    def flops_per_token(self) -> int:
        return 4 * self.hidden_size * self.width + self.out.flops_per_token()


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Softmax arithmetic in float32 under bf16/fp16 autocast, in float64 when the head is float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def svd_factors(weight: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(U S^{1/2} (V, k), S^{1/2} V^T (k, d)) of W = U S V^T, k = min(V, d), computed in float64.

    Their first r columns / rows are the Eckart-Young rank-r factors A_r, B_r (float32).
    """
    w = torch.as_tensor(np.asarray(weight, dtype=np.float64) if isinstance(weight, np.ndarray) else weight.detach().double().cpu())
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s.sqrt()
    return (u * root).float(), (root[:, None] * vh).float()


def build_head(
    spec: HeadSpec,
    vocab_size: int,
    hidden_size: int,
    rank: int | None,
    feature_rms: float = 1.0,
    seed: int = 0,
    factors: tuple[torch.Tensor, torch.Tensor] | None = None,
    bias: torch.Tensor | None = None,
    plain: bool = False,
) -> ProbeHead:
    """A head ``spec`` whose output map has rank ``rank`` (None: min(V, d)).

    ``factors`` (from :func:`svd_factors`) give the SVD initialisation of A, B (and W with
    ``plain``: one V x d matrix), with the own head's ``bias``; else the study's Gaussian
    initialisation (:mod:`lmsat.nn.heads`).
    """
    gen = torch.Generator().manual_seed(seed)
    r = min(vocab_size, hidden_size) if rank is None else rank
    # a MoS component context tanh(P_k h + c_k) has rms ~0.63 (gaussian init) or ~scale * rho (svd init)
    scale = 0.25 / feature_rms if factors is not None else 1.0 / feature_rms
    map_rms = _TANH_RMS if spec.kind == "mos" and factors is None else feature_rms
    out: LowRankHead | FullRankHead
    if plain:
        out = FullRankHead(vocab_size, hidden_size, map_rms, generator=gen)
        if factors is not None:
            a, b = factors
            w = a @ b
            out.set_weight(w / scale if spec.kind == "mos" else w, bias)
    else:
        out = LowRankHead(vocab_size, hidden_size, r, map_rms, generator=gen)
        if factors is not None:
            a, b = factors[0][:, :r], factors[1][:r]
            out.set_factors(a, b / scale if spec.kind == "mos" else b, bias)
    if spec.kind == "softmax":
        return out
    if spec.kind == "sigsoftmax":
        return SigSoftmax(out)
    if spec.kind == "mlp":
        return MLPHead(out, generator=gen, feature_rms=feature_rms)
    return MixtureOfSoftmaxes(out, spec.components, generator=gen, context_scale=scale)
