"""Pieces every model-measuring experiment shares: inputs recorded with each result."""

from __future__ import annotations

from typing import Any

from lmsat import __version__
from lmsat.loading.models import LoadedModel, ModelSpec
from lmsat.loading.tokens import TokenSample


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
    if sample is not None:
        inputs["token_sample"] = sample.describe()
    inputs.update(extra)
    return inputs
