"""Settings of one model's training (:class:`TrainConfig`) and its pure schedules."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from lmsat.errors import UserError
from lmsat.training.schedule import warmup_cosine

KIND = "train"
ARCHS: tuple[str, ...] = ("gpt-neox", "llama")
TRAIN_CONFIG = "train_config.json"
METRICS = "metrics.jsonl"
STATE_FILE = "training_state.pt"
#: --head-init: "default" (the architecture's own initialisation) or "random" (a random head with a flat spectrum).
HEAD_INITS: tuple[str, ...] = ("default", "random")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one model's training (see module docstring); ``hidden_size`` is d."""

    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    arch: str = "gpt-neox"
    seq_len: int = 64
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    data_seed: int | None = None
    weight_seed: int | None = None
    checkpoint_every: int = 100
    eval_tokens: int = 16384
    max_tokens: int | None = None
    log_every: int = 10
    head: str = "softmax"
    head_init: str = "default"
    freeze_head: bool = False
    head_spectral_reg: float = 0.0
    device: str = "auto"

    @property
    def model_name(self) -> str:
        """Folder name of the model: ``<arch>-d<hidden>-l<layers>`` (e.g. ``gpt-neox-d64-l2``), then the
        seeds in PolyPythias' spelling when not the default: ``-seed<N>`` (N != 0), ``-weight-seed<N>``,
        ``-data-seed<N>`` (e.g. ``gpt-neox-d64-l2-seed3``)."""
        tail = f"-seed{self.seed}" if self.seed != 0 else ""
        tail += f"-weight-seed{self.weight_seed}" if self.weight_seed is not None else ""
        tail += f"-data-seed{self.data_seed}" if self.data_seed is not None else ""
        if self.head != "softmax":  # e.g. gpt-neox-d8-l2-mos4 (lmsat.nn.beyond)
            tail += "-" + self.head.replace(":", "")
        tail += "-random-head" if self.head_init == "random" else ""
        tail += "-frozen-head" if self.freeze_head else ""
        tail += f"-specreg{self.head_spectral_reg:g}" if self.head_spectral_reg else ""
        return f"{self.arch}-d{self.hidden_size}-l{self.layers}{tail}"

    @property
    def init_seed(self) -> int:
        """Seed of the initial weights: ``weight_seed`` when given, else ``seed`` (the one place seeds resolve)."""
        return self.seed if self.weight_seed is None else self.weight_seed

    @property
    def order_seed(self) -> int:
        """Seed of the batch order: ``data_seed`` when given, else ``seed``."""
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def settings(self) -> dict[str, Any]:
        """Everything that determines the trained weights (the device is left out)."""
        out = asdict(self)
        out.pop("device")
        return out

    def validate(self) -> None:
        """Raise :class:`UserError` for settings that cannot train."""
        from lmsat.nn.beyond import HeadSpec

        HeadSpec.parse(self.head, "--head")
        if self.head_init not in HEAD_INITS:
            raise UserError(f"--head-init must be one of {', '.join(HEAD_INITS)} (got '{self.head_init}').")
        if self.head_init == "random" and self.head != "softmax":
            raise UserError("--head-init random applies to --head softmax (one V x d matrix); drop one of the two.")
        if not (self.head_spectral_reg >= 0 and math.isfinite(self.head_spectral_reg)):
            raise UserError(f"--head-spectral-reg must be a number >= 0 (got {self.head_spectral_reg}).")
        if self.freeze_head and self.head_spectral_reg:
            raise UserError("--head-spectral-reg acts on the head's weights, which --freeze-head keeps fixed; use one of the two.")
        if self.arch not in ARCHS:
            raise UserError(f"--arch must be one of {', '.join(ARCHS)} (got '{self.arch}').")
        positive = {"--hidden-sizes": self.hidden_size, "--layers": self.layers, "--heads": self.heads, "--steps": self.steps,
                    "--batch-size": self.batch_size, "--checkpoint-every": self.checkpoint_every,
                    "--eval-tokens": self.eval_tokens, "--log-every": self.log_every}
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"{name} must be >= 1 (got {value}).")
        if self.hidden_size % self.heads:
            raise UserError(
                f"hidden size {self.hidden_size} is not divisible by --heads {self.heads}; "
                "pick hidden sizes that are multiples of the number of heads."
            )
        for name, seed in (("--seed", self.seed), ("--data-seed", self.data_seed), ("--weight-seed", self.weight_seed)):
            if seed is not None and not 0 <= seed < 2**32:
                raise UserError(f"{name} must be an integer in [0, 2^32) (got {seed}).")
        if self.seq_len < 2:
            raise UserError(f"--seq-len must be >= 2 (got {self.seq_len}).")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"--lr must be a positive number (got {self.lr}).")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"--min-lr-ratio must be in [0, 1] (got {self.min_lr_ratio}).")
        if not 0 <= self.warmup <= self.steps:
            raise UserError(f"--warmup must be between 0 and --steps {self.steps} (got {self.warmup}).")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise UserError(f"--max-tokens must be >= 2 (got {self.max_tokens}).")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            raise UserError(f"--weight-decay must be >= 0 and --grad-clip > 0 (got {self.weight_decay} and {self.grad_clip}).")


# --- schedules (pure) -----------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update ``step`` (0-based): ``cfg.lr`` times :func:`warmup_cosine`
    (linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio * lr``)."""
    return cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, cfg.min_lr_ratio)


def checkpoint_steps(steps: int, every: int) -> list[int]:
    """Pythia-like schedule: 0, the powers of two below ``every``, the multiples of ``every`` up to ``steps``, and ``steps``."""
    out = {0, steps}
    p = 1
    while p < min(every, steps):
        out.add(p)
        p *= 2
    out.update(range(every, steps + 1, every))
    return sorted(out)

