"""The LM head's singular spectrum, singular entropy, effective rank and W-error (docs/methods.md §3, §4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmsat.experiments.common import model_inputs, model_key, still_current
from lmsat.kinds.head import HeadRecord
from lmsat.loading.models import ModelSpec, lm_head_weight, load_config, load_model
from lmsat.measure.spectrum import (
    effective_rank,
    singular_entropy,
    singular_values,
    w_error_curve,
)
from lmsat.store import Record, Store

KIND = "head"
TOP_K = 100


def head_summary(s: np.ndarray) -> dict[str, Any]:
    """Scalar summaries of a head spectrum ``s`` (d values): entropies, effective ranks, W-error at d/8, d/4, d/2."""
    d = len(s)
    curve = w_error_curve(s)
    return {
        "n_singular_values": d,
        "singular_entropy": singular_entropy(s, "squared"),
        "singular_entropy_linear": singular_entropy(s, "linear"),
        "max_singular_entropy": float(np.log(d)),
        "effective_rank": effective_rank(s, "squared"),
        "effective_rank_linear": effective_rank(s, "linear"),
        "s1": float(s[0]),
        "condition_number": float(s[0] / s[-1]) if s[-1] > 0 else None,
        "w_error_d8": float(curve[d // 8]),
        "w_error_d4": float(curve[d // 4]),
        "w_error_d2": float(curve[d // 2]),
    }


def run_head(specs: list[ModelSpec], output: str | Path, force: bool = False) -> list[Record]:
    """Singular values of each model's LM head; one record per model (array ``singular_values``)."""
    for spec in specs:
        load_config(spec)
    store = Store(output)
    records = []
    for spec in specs:
        key = model_key(spec)
        done = store.get(KIND, key)
        if still_current(done, spec) and not force:
            records.append(done)
            continue
        loaded = load_model(spec, require_causal=True)
        weight, info = lm_head_weight(loaded.model)
        from lmsat.progress import status

        with status(f"singular values of the {weight.shape[0]:,} x {weight.shape[1]:,} head of {spec.label}"):
            s = singular_values(weight)
        rec = HeadRecord(key=key, inputs=model_inputs(loaded), **head_summary(s), head=info)
        records.append(rec.put(store, arrays={"singular_values": s, "w_error": w_error_curve(s)}))
        del loaded
    return records

