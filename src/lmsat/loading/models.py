"""Models: a Hugging Face id or local folder, a revision, GGUF files, dtype and device.

:func:`load_model` turns every failure a user can cause (missing folder, hub
unreachable, unknown revision, unreadable GGUF, non-causal model) into a
:class:`~lmsat.errors.UserError` with a one-line message. It never enables
``trust_remote_code`` unless asked, and prefers safetensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmsat.device import DEVICES, resolve_device  # noqa: F401  (re-exported: the one device resolver)
from lmsat.errors import UserError
from lmsat.loading.hub import (  # noqa: F401
    check_hub_reachable,
    check_model_source,
    hub_error,
    looks_like_hub_id,
)

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSpec:
    """What to load. ``name`` is a hub id (``EleutherAI/pythia-70m``) or a local folder."""

    name: str
    revision: str | None = None
    gguf_file: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    trust_remote_code: bool = False

    @property
    def label(self) -> str:
        """Human name and record identity: ``name@revision``, ``folder/file.gguf@revision`` for a GGUF file.

        The GGUF file is part of it: two GGUF files of one folder, or the folder's own weights and a
        GGUF file inside it, are different models.
        """
        base = self.name.rstrip("/")
        if self.gguf_file:
            base = f"{base}/{self.gguf_file}"
        return f"{base}@{self.revision}" if self.revision else base

    def describe(self) -> dict[str, Any]:
        return asdict(self)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def weights_fingerprint(spec: ModelSpec) -> str | None:
    """What identifies a local model's weights beyond its path: sha256 over the name, size and modification time
    of its weight files (``*.safetensors``, ``*.bin``, ``*.pt``, ``*.gguf``: only ``spec.gguf_file`` for a GGUF
    model) and of ``config.json``, first 16 hex digits. A model re-trained or replaced in the same folder gets
    another fingerprint, so records measured on the old weights are not reused (docs/architecture.md, "Record
    identity"). None for a hub id (its revision names its weights) or a folder that does not exist.
    """
    import hashlib

    folder = Path(spec.name)
    if not folder.is_dir():
        return None
    files = [folder / spec.gguf_file] if spec.gguf_file else sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    files.append(folder / "config.json")
    h = hashlib.sha256()
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Any
    config: Any
    device: str
    is_causal: bool
    notes: list[str] = field(default_factory=list)

    @property
    def hidden_size(self) -> int:
        return int(get_hidden_size(self.config))

    @property
    def num_layers(self) -> int:
        return int(getattr(self.config, "num_hidden_layers", 0) or getattr(self.config, "n_layer", 0))


def parse_model_arg(arg: str, revision: str | None = None, **kw: Any) -> ModelSpec:
    """``NAME[@REVISION]`` or ``path/to/model.gguf`` -> :class:`ModelSpec`.

    ``--revision`` applies when the argument has none; a ``.gguf`` file path sets
    the folder and ``gguf_file`` itself (so GGUF and HF models mix in one call).
    """
    name, rev = arg, revision
    if "@" in arg and not Path(arg).exists():
        name, rev = arg.rsplit("@", 1)
        if not rev:
            raise UserError(f"model '{arg}' ends in '@' with no revision; write NAME@REVISION (e.g. EleutherAI/pythia-70m@step1000) or drop the '@'.")
    if (rev or None) is not None and Path(name).expanduser().exists():
        given = f"'@{rev}'" if rev != revision else f"--revision {rev}"
        raise UserError(
            f"{given} was given for the local model '{name}', but revisions exist only on the Hugging Face hub; "
            "drop it, or give the checkpoint's own folder."
        )
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise UserError(f"GGUF file '{name}' does not exist.")
        kw = {**kw, "gguf_file": path.name}
        name = str(path.parent)
    return ModelSpec(name=name, revision=rev or None, **kw)


def torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)} (got '{dtype}').")
    return getattr(torch, dtype)


def load_config(spec: ModelSpec) -> Any:
    from transformers import AutoConfig

    check_model_source(spec.name, spec.gguf_file)
    try:
        return AutoConfig.from_pretrained(
            spec.name, revision=spec.revision, gguf_file=spec.gguf_file, trust_remote_code=spec.trust_remote_code
        )
    except Exception as exc:
        raise hub_error("model", spec.name, spec.revision, exc) from exc


def is_causal_config(config: Any) -> bool:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    # The saved architectures say what the checkpoint is (BertConfig is in the causal mapping,
    # but a "BertModel" checkpoint is an encoder); fall back on the mapping when none are saved.
    archs = getattr(config, "architectures", None) or []
    if archs:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    return type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and not getattr(config, "is_encoder_decoder", False)


def get_hidden_size(config: Any) -> int:
    for attr in ("hidden_size", "n_embd", "d_model", "dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    text_config = getattr(config, "text_config", None)
    if text_config is not None:
        return get_hidden_size(text_config)
    raise UserError(f"cannot find the hidden size in the config of {type(config).__name__}.")


def load_model(spec: ModelSpec, require_causal: bool = True) -> LoadedModel:
    """Load the model on its device in eval mode; see the module docstring for the errors it raises.

    With ``require_causal=False`` an encoder (e.g. BERT) loads through ``AutoModel``,
    which is enough for layer-wise anisotropy.
    """
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = resolve_device(spec.device)
    dtype = torch_dtype(spec.dtype)
    config = load_config(spec)
    causal = is_causal_config(config)
    if require_causal and not causal:
        raise UserError(
            f"'{spec.name}' is a {config.model_type} model without a causal language-model head; "
            "this command needs a causal LM (GPT-NeoX, Llama, GPT-2, OPT, ...)."
        )
    loader = AutoModelForCausalLM if causal else AutoModel
    kwargs: dict[str, Any] = {
        "revision": spec.revision,
        "dtype": dtype,
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    else:
        kwargs["use_safetensors"] = None  # safetensors when present, else weights_only torch files
    from lmsat.progress import status

    try:
        with status(f"loading {spec.label}" + (f" ({spec.gguf_file}, de-quantizing)" if spec.gguf_file else "")):
            model = loader.from_pretrained(spec.name, **kwargs)
    except Exception as exc:
        raise hub_error("model", spec.name, spec.revision, exc) from exc
    model.to(device)
    model.eval()
    notes = []
    if spec.gguf_file:
        notes.append(f"loaded from GGUF file {spec.gguf_file} (quantized weights de-quantized to {spec.dtype})")
    return LoadedModel(spec=spec, model=model, config=config, device=device, is_causal=causal, notes=notes)


def load_model_tokenizer(spec: ModelSpec) -> Any:
    """The model's tokenizer as a :class:`~lmsat.loading.tokenizers.TextTokenizer`."""
    from lmsat.loading.tokenizers import load_tokenizer

    return load_tokenizer(spec.name, revision=spec.revision, gguf_file=spec.gguf_file)


def lm_head_weight(model: Any) -> tuple[Any, dict[str, Any]]:
    """The LM head matrix W (V x d) and facts about it: tied to the input embedding, bias ignored."""
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise UserError(f"{type(model).__name__} has no output embedding (LM head); lmsat needs a causal LM.")
    weight = head.weight
    info: dict[str, Any] = {"vocab_rows": int(weight.shape[0]), "hidden_size": int(weight.shape[1])}
    emb = model.get_input_embeddings()
    info["tied"] = bool(emb is not None and getattr(emb, "weight", None) is not None and emb.weight.data_ptr() == weight.data_ptr())
    bias = getattr(head, "bias", None)
    info["bias"] = "present, ignored (the spectrum is that of W only)" if bias is not None else "none"
    return weight, info
