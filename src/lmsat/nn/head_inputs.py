"""The one "head inputs" forward pass: what a causal LM's output head receives, and its logits.

A forward pre-hook on the model's output-embedding module (``model.get_output_embeddings()``)
captures that module's input h_t (after the final norm, exactly what the head sees) during an
ordinary forward, so h and the logits come from the same pass. Used by the sweep
(:mod:`lmsat.experiments.representations`), by training's held-out evaluation
(:mod:`lmsat.training.model`) and by the rank probe's feature cache
(:mod:`lmsat.experiments.rank_probe.features`). See docs/methods.md (head inputs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from lmsat.errors import UserError


@contextmanager
def capture_head_inputs(model: Any) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward of ``model`` stores its head's input as ``captured["h"]``.

    ``captured["h"]`` is replaced by each forward (batch, seq, d); the hook is removed on exit.
    """
    head = model.get_output_embeddings()
    if head is None:
        raise UserError(f"{type(model).__name__} has no output embedding (LM head); a causal language model is needed.")
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        captured["h"] = args[0]

    handle = head.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def head_inputs_forward(model: Any, input_ids: torch.Tensor, captured: dict[str, torch.Tensor], **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """One forward of ``model`` inside :func:`capture_head_inputs`: (h (batch, seq, d), the model's output).

    The output's ``logits`` are the head applied to the same h. Raises :class:`UserError`
    when the model computed its logits without calling its output-embedding module.
    """
    captured.pop("h", None)
    out = model(input_ids=input_ids, use_cache=False, **kwargs)
    if "h" not in captured:
        raise UserError(
            f"{type(model).__name__} computed its logits without calling its output embedding module, "
            "so lmsat cannot capture what its head sees; standard Hugging Face causal LMs are supported."
        )
    return captured.pop("h"), out
