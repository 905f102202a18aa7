"""One forward pass over a token sample, reduced per layer as the batches stream.

Memory stays O(layers x d) whatever the number of tokens: each batch's hidden
states are folded into per-layer :class:`AnisotropyAccumulator` objects and
dropped. The same pass gives the model's cross-entropy on the sample (next
token within each sequence), so checkpoint sweeps need one forward per model.

Layer 0 is the embedding output; layer L is exactly what the LM head sees, taken by
the one head-inputs pass (:mod:`lmsat.nn.head_inputs`: a hook on the head's input) for
causal LMs, else the last hidden state. Normalised depth = layer / L.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from lmsat.loading.models import LoadedModel
from lmsat.loading.tokens import TokenSample
from lmsat.measure.anisotropy import AnisotropyAccumulator
from lmsat.measure.loss import next_token_cross_entropy
from lmsat.nn.head_inputs import capture_head_inputs, head_inputs_forward
from lmsat.progress import track


@dataclass
class LayerStats:
    layer: int
    depth: float
    anisotropy: float
    mean_norm: float
    n_vectors: int


@dataclass
class PassResult:
    layers: list[LayerStats]
    loss_sum: float
    n_predictions: int
    n_tokens: int

    @property
    def cross_entropy(self) -> float:
        """Mean next-token cross-entropy in nats/token (NaN if not computed)."""
        return self.loss_sum / self.n_predictions if self.n_predictions else float("nan")


def representation_pass(
    loaded: LoadedModel,
    sample: TokenSample,
    batch_size: int = 8,
    layers: Literal["all", "last", "none"] = "all",
    compute_loss: bool = True,
    description: str = "forward",
) -> PassResult:
    """Forward every sequence of ``sample`` once; per-layer anisotropy and mean norm, and the loss."""
    model = loaded.model
    ids = torch.from_numpy(np.ascontiguousarray(sample.ids))
    accs: list[AnisotropyAccumulator] | None = None
    loss_sum, n_pred = 0.0, 0
    want_hidden = layers != "none"
    compute_loss = compute_loss and loaded.is_causal
    starts = range(0, ids.shape[0], batch_size)
    # the last layer is taken where the head takes it (the one head-inputs pass), when there is a head
    use_hook = loaded.is_causal and getattr(model, "get_output_embeddings", lambda: None)() is not None
    with torch.inference_mode(), (capture_head_inputs(model) if use_hook else nullcontext({})) as captured:
        for start in track(starts, description, unit="batches"):
            batch = ids[start : start + batch_size].to(loaded.device)
            all_layers = layers == "all" or (want_hidden and not use_hook)
            if use_hook:
                head_input, out = head_inputs_forward(model, batch, captured, output_hidden_states=layers == "all")
            else:
                out = model(input_ids=batch, output_hidden_states=all_layers, use_cache=False)
            if want_hidden:
                if use_hook:
                    hidden = (*out.hidden_states[:-1], head_input) if layers == "all" else (head_input,)
                else:
                    hidden = out.hidden_states if layers == "all" else out.hidden_states[-1:]
                if accs is None:
                    accs = [AnisotropyAccumulator() for _ in hidden]
                for acc, h in zip(accs, hidden):
                    acc.update(h)
            if compute_loss:
                s, n = next_token_cross_entropy(out.logits, batch)
                loss_sum += s
                n_pred += n
            del out
    stats: list[LayerStats] = []
    if accs:
        n_layers = len(accs) - 1 if layers == "all" else loaded.num_layers
        first = 0 if layers == "all" else n_layers
        for i, acc in enumerate(accs):
            layer = first + i
            stats.append(
                LayerStats(
                    layer=layer,
                    depth=layer / n_layers if n_layers else 1.0,
                    anisotropy=acc.value,
                    mean_norm=acc.mean_norm,
                    n_vectors=acc.n,
                )
            )
    return PassResult(layers=stats, loss_sum=loss_sum, n_predictions=n_pred, n_tokens=int(ids.numel()))
