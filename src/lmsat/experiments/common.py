"""Pieces every model-measuring experiment shares: inputs recorded with each result."""

from __future__ import annotations

from typing import Any

from lmsat import __version__
from lmsat.loading.models import LoadedModel, ModelSpec, weights_fingerprint
from lmsat.loading.tokens import TokenSample
from lmsat.store import Record, warn


def model_key(spec: ModelSpec) -> str:
    """Record key of a model: ``name@revision`` plus the dtype when it is not float32."""
    return spec.label if spec.dtype == "float32" else f"{spec.label}~{spec.dtype}"


def model_inputs(loaded: LoadedModel, sample: TokenSample | None = None, **extra: Any) -> dict[str, Any]:
    """The exact inputs of a result: model, revision, dtype, device, sample hash, package version."""
    spec = loaded.spec
    inputs: dict[str, Any] = {
        "model": spec.name,
        "revision": spec.revision,
        "gguf_file": spec.gguf_file,
        "dtype": spec.dtype,
        "device": loaded.device,
        "model_type": getattr(loaded.config, "model_type", None),
        "hidden_size": loaded.hidden_size,
        "num_layers": loaded.num_layers,
        "lmsat_version": __version__,
        "notes": loaded.notes,
    }
    fingerprint = weights_fingerprint(spec)
    if fingerprint is not None:
        inputs["weights_fingerprint"] = fingerprint
    if sample is not None:
        inputs["token_sample"] = sample.describe()
    inputs.update(extra)
    return inputs


def still_current(done: Record | None, spec: ModelSpec, quiet: bool = False) -> bool:
    """True when ``done`` (a stored record of ``spec``) was measured on the weights the model has now.

    A local folder's record stores :func:`~lmsat.loading.models.weights_fingerprint`; when the folder's
    weights changed since (re-trained or replaced in place), the record is stale: one warning line, and
    the caller measures again and overwrites it. Records without a fingerprint (hub models, lmsat 0.1
    records) are current.
    """
    if done is None:
        return False
    stored = done.inputs.get("weights_fingerprint")
    if stored is None:
        return True
    now = weights_fingerprint(spec)
    if now is None or now == stored:
        return True
    if not quiet:
        warn(f"the weights of {spec.label} changed since {done.path or done.key} was measured; measuring again.")
    return False
