"""The model's own head as SVD factors, and the loss of its rank-r truncation at every r.

With W = U S V^T the own head (V x d; the tied input embedding for tied models) and b its
bias (or none), the rank-r truncation W_r = U_r S_r V_r^T is the best rank-r approximation
in Frobenius norm (Eckart-Young). Its held-out loss

    L_trunc(r) = mean_t [ logsumexp(W_r h_t + b) - (W_r h_t + b)[y_t] ]   (nats/token)

needs no training: it is where an SVD-initialised probe starts, and a cheap curve next to
W-error(r) (study Fig. 8). The factors U S^{1/2} and S^{1/2} V^T are kept in the feature
cache folder (``head_svd.npz``), whose identity already covers the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lmsat.experiments.rank_probe.features import FeatureCache
from lmsat.experiments.rank_probe.fit import evaluate_head
from lmsat.experiments.rank_probe.settings import REF_KIND
from lmsat.kinds.rank_probe import RankProbeRefRecord
from lmsat.nn.beyond import svd_factors
from lmsat.nn.heads import LowRankHead
from lmsat.store import Record, Store, atomic_save_npz, warn

FACTORS_FILE = "head_svd.npz"


@dataclass
class OwnHeadFactors:
    """U S^{1/2} (V, k) and S^{1/2} V^T (k, d) of the own head W (k = min(V, d)), and its bias (V,) or None."""

    factors: tuple[torch.Tensor, torch.Tensor]
    bias: torch.Tensor | None


def own_head_factors(folder: Path, model: Callable[[], Any]) -> OwnHeadFactors:
    """The own head's SVD factors from ``folder/head_svd.npz``, or computed from ``model()`` and saved there.

    A damaged file is recomputed, with one warning line naming it.
    """
    from lmsat.loading.models import lm_head_weight

    path = Path(folder) / FACTORS_FILE
    if path.is_file():
        try:
            with np.load(path) as z:
                a, b = torch.from_numpy(z["a"]), torch.from_numpy(z["b"])
                bias = torch.from_numpy(z["bias"]) if "bias" in z.files else None
            return OwnHeadFactors((a, b), bias)
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file: recompute it
            warn(f"'{path}' cannot be read ({type(exc).__name__}); recomputing the head's SVD.")
    loaded = model()
    weight, _ = lm_head_weight(loaded.model)
    out_bias = getattr(loaded.model.get_output_embeddings(), "bias", None)
    a, b = svd_factors(weight)
    bias = out_bias.detach().float().cpu() if out_bias is not None else None
    arrays = {"a": a.numpy(), "b": b.numpy()}
    if bias is not None:
        arrays["bias"] = bias.numpy()
    atomic_save_npz(path, **arrays)
    return OwnHeadFactors((a, b), bias)


def truncation_ranks(hidden_size: int, vocab_size: int, extra: list[int] | None = None) -> list[int]:
    """Ranks of the truncation curve: powers of two, multiples of k / 8 and ``extra``, up to k = min(V, d)."""
    k = min(hidden_size, vocab_size)
    ranks = {k, *(r for r in (extra or []) if 1 <= r <= k)}
    r = 1
    while r < k:
        ranks.add(r)
        r *= 2
    ranks.update(max(1, round(k * i / 8)) for i in range(1, 8))
    return sorted(ranks)


def truncation_curve(
    store: Store, cache: FeatureCache, prefix: str, own: OwnHeadFactors, inputs: dict[str, Any], device: str,
    extra_ranks: list[int] | None = None, chunk_tokens: int = 0,
) -> Record:
    """Held-out loss of the SVD truncation W_r (+ bias) at each rank (record ``<model>|svd-truncation``).

    Arrays: ``ranks``, ``loss`` (nats/token), ``loss_se`` (its standard error over the held-out tokens).
    """
    key = f"{prefix}|svd-truncation"
    ranks = truncation_ranks(cache.hidden_size, cache.vocab_size, extra_ranks)
    rec = store.get(REF_KIND, key)
    if rec is not None and rec.results.get("ranks") == ranks:
        return rec
    losses, ses, accs = [], [], []
    seqs = np.arange(cache.eval.n_seqs)
    a_full, b_full = own.factors
    from lmsat.progress import track

    for r in track(ranks, "held-out loss of the own head truncated to rank r", unit="ranks"):
        head = LowRankHead(cache.vocab_size, cache.hidden_size, r)
        head.set_factors(a_full[:, :r], b_full[:r], own.bias)
        ev = evaluate_head(head, cache.eval, seqs, device, chunk_tokens)
        losses.append(ev["loss"])
        ses.append(ev["loss_se"])
        accs.append(ev["accuracy"])
    results = {"head": "svd-truncation", "ranks": ranks, "losses": losses, "eval_tokens": int(cache.eval.n_rows)}
    return RankProbeRefRecord.of(key, {**inputs, "head": "svd-truncation", "features": cache.hash}, results).put(
        store, arrays={"ranks": np.asarray(ranks), "loss": np.asarray(losses), "loss_se": np.asarray(ses),
                             "accuracy": np.asarray(accs)})
