"""The one device resolver: ``--device auto|cpu|cuda`` to the torch device every command uses."""

from __future__ import annotations

from lmsat.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is present, else ``cpu``."""
    import torch

    if device not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)} (got '{device}').")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto.")
    return device
