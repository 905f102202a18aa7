"""Training small causal LMs (Pythia-like families) with checkpoints every lmsat command reads.

Entry points: :func:`lmsat.training.train.train_family` (one model per hidden size) and
:func:`lmsat.training.train.train_model`; settings in :class:`lmsat.training.train.TrainConfig`.
"""

from lmsat.training.train import (
    TrainConfig,
    checkpoint_steps,
    lr_at,
    train_family,
    train_model,
)

__all__ = ["TrainConfig", "checkpoint_steps", "lr_at", "train_family", "train_model"]
