"""The model of a family (GPT-NeoX or Llama config), its optimizer, and held-out evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmsat.nn.head_inputs import capture_head_inputs, head_inputs_forward
from lmsat.training.config import (
    TrainConfig,
)
from lmsat.training.data import TrainingData

# --- model ----------------------------------------------------------------------------------


def rotary_fraction(head_dim: int) -> float:
    """Pythia's 25% of each head's dimensions, raised so that at least 2 dimensions rotate."""
    if head_dim < 2:
        return 0.25
    return min(1.0, max(0.25, 2.0 / head_dim))


def model_config(cfg: TrainConfig, vocab_size: int, eos_id: int | None) -> Any:
    """The transformers config of one model of the family (see module docstring)."""
    from transformers import GPTNeoXConfig, LlamaConfig

    d = cfg.hidden_size
    common = dict(
        vocab_size=vocab_size, hidden_size=d, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        max_position_embeddings=max(2048, cfg.seq_len), tie_word_embeddings=False, bos_token_id=eos_id,
        eos_token_id=eos_id, initializer_range=0.02,
    )
    if cfg.arch == "gpt-neox":
        return GPTNeoXConfig(**common, intermediate_size=4 * d, rotary_pct=rotary_fraction(d // cfg.heads),
                             use_parallel_residual=True, hidden_dropout=0.0, attention_dropout=0.0,
                             architectures=["GPTNeoXForCausalLM"])
    return LlamaConfig(**common, intermediate_size=8 * (-(-8 * d // 3) // 8), num_key_value_heads=cfg.heads,
                       architectures=["LlamaForCausalLM"])


def build_model(cfg: TrainConfig, vocab_size: int, eos_id: int | None) -> Any:
    """A freshly initialised model, weights drawn after ``torch.manual_seed(cfg.init_seed)``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(cfg.init_seed)
    model = AutoModelForCausalLM.from_config(model_config(cfg, vocab_size, eos_id))
    if cfg.head != "softmax":
        from lmsat.nn.beyond import HeadSpec, build_head

        # the head's input is the final norm's output (rms ~1); rank d: only the head function differs
        model.set_output_embeddings(build_head(HeadSpec.parse(cfg.head), vocab_size, cfg.hidden_size, None, 1.0, seed=cfg.init_seed))
    if cfg.head_init == "random":
        flat_spectrum_head(model, cfg.init_seed)
    freeze_head(model, cfg.freeze_head)
    return model


def flat_spectrum_head(model: Any, seed: int) -> None:
    """Replace the LM head's weight (V, d) by a random matrix of full rank d with equal singular values.

    W = sigma U V^T from the SVD of a seeded Gaussian (V, d) matrix, sigma = 0.02 sqrt(V d / min(V, d)):
    the same |W|_F as the usual N(0, 0.02^2) initialisation, its energy spread evenly over all d directions
    (singular entropy ln min(V, d), effective rank min(V, d)). An intervention on the head's spectrum (issue 17).
    """
    import torch

    head = model.get_output_embeddings()
    V, d = head.weight.shape
    gen = torch.Generator().manual_seed(int(seed) + 17)
    u, _, vh = torch.linalg.svd(torch.randn(V, d, generator=gen, dtype=torch.float64), full_matrices=False)
    q = u @ vh  # (V, d), all min(V, d) singular values 1
    with torch.no_grad():
        head.weight.copy_((q * 0.02 * (V * d / min(V, d)) ** 0.5).to(head.weight.dtype))


def freeze_head(model: Any, frozen: bool) -> None:
    """``frozen``: the LM head's parameters get no gradient and are left out of the optimizer (--freeze-head)."""
    for p in model.get_output_embeddings().parameters():
        p.requires_grad_(not frozen)


def spectral_penalty(model: Any) -> Any:
    """1 - H(q) / ln k of the LM head's matrix, q_i = s_i^2 / sum_j s_j^2 over its k = min(V, d) singular
    values: 0 for a flat spectrum (effective rank k), up to 1 for rank one. Differentiable (torch.linalg.svdvals)."""
    import math

    import torch

    s = torch.linalg.svdvals(head_matrix(model).float())
    q = s.square() / s.square().sum()
    entropy = -(q * torch.log(q.clamp_min(1e-30))).sum()
    return 1.0 - entropy / math.log(len(s))


def head_cost(model: Any) -> dict[str, int]:
    """Parameters and matmul FLOPs per token (2 per multiply-add) of the model's LM head."""
    from lmsat.nn.heads import ProbeHead

    head = model.get_output_embeddings()
    params = sum(p.numel() for p in head.parameters())
    flops = head.flops_per_token() if isinstance(head, ProbeHead) else 2 * head.weight.numel()
    return {"head_parameters": int(params), "head_flops_per_token": int(flops)}


def head_matrix(model: Any) -> Any:
    """The (V, d) matrix of the LM head's linear output map (its weight; A B for factorised heads)."""
    from lmsat.nn.heads import ProbeHead

    head = model.get_output_embeddings()
    return head.output_matrix() if isinstance(head, ProbeHead) else head.weight


def count_params(model: Any) -> tuple[int, int]:
    """(all parameters, parameters outside the input embedding and the LM head)."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel() + sum(p.numel() for p in model.get_output_embeddings().parameters())
    return int(total), int(total - emb)


def make_optimizer(model: Any, cfg: TrainConfig) -> Any:
    """AdamW, betas (0.9, 0.95); weight decay on parameters with >= 2 dimensions only."""
    import torch

    trained = [p for p in model.parameters() if p.requires_grad]  # a frozen head (--freeze-head) is left out
    decay = [p for p in trained if p.ndim >= 2]
    no_decay = [p for p in trained if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


# --- evaluation -----------------------------------------------------------------------------


@dataclass
class EvalResult:
    eval_loss: float  # mean -ln q over all held-out targets, nats/token
    last_layer_anisotropy: float
    head_singular_values: np.ndarray
    reference_entropy: float | None = None  # mean true -ln p over the targets it is known for
    gap: float | None = None  # mean (-ln q + ln p) over those same targets
    gap_standard_error: float | None = None  # std(-ln q + ln p) / sqrt(n) over those targets

    def as_json(self) -> dict[str, Any]:
        from lmsat.measure.spectrum import effective_rank, singular_entropy

        s = self.head_singular_values
        return {
            "eval_loss": self.eval_loss,
            "reference_entropy": self.reference_entropy,
            "gap": self.gap,
            "gap_standard_error": self.gap_standard_error,
            "last_layer_anisotropy": self.last_layer_anisotropy,
            "head_singular_entropy": singular_entropy(s),
            "head_effective_rank": effective_rank(s),
            "head_singular_values": [float(x) for x in s],
        }


def evaluate(model: Any, data: TrainingData, batch_size: int, device: str) -> EvalResult:
    """Held-out loss, the paired gap to the true entropy (when known), last-layer anisotropy, head spectrum.

    The last layer is what the LM head sees, taken by the one head-inputs pass
    (:mod:`lmsat.nn.head_inputs`), whose logits are the same forward's.
    """
    import torch
    import torch.nn.functional as F

    from lmsat.measure.anisotropy import AnisotropyAccumulator
    from lmsat.measure.spectrum import singular_values

    was_training = model.training
    model.eval()
    acc = AnisotropyAccumulator()
    losses = []
    with torch.inference_mode(), _autocast(device), capture_head_inputs(model) as captured:
        for start in range(0, len(data.eval), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(data.eval[start : start + batch_size])).to(device)
            h, out = head_inputs_forward(model, x[:, :-1], captured)
            acc.update(h.float())
            logits = out.logits.float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
            losses.append(nll.reshape(x.shape[0], -1).double().cpu().numpy())
    model.train(was_training)
    nll = np.concatenate(losses)
    result = EvalResult(eval_loss=float(nll.mean()), last_layer_anisotropy=acc.value,
                        head_singular_values=singular_values(head_matrix(model).detach()))
    if data.eval_reference is not None:
        known = np.isfinite(data.eval_reference)
        if known.any():
            diff = nll[known] - data.eval_reference[known]
            result.reference_entropy = float(data.eval_reference[known].mean())
            result.gap = float(diff.mean())
            result.gap_standard_error = float(diff.std() / np.sqrt(diff.size))
    return result


def _autocast(device: str) -> Any:
    import contextlib

    import torch

    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

