"""Where a model or tokenizer comes from: local path or Hugging Face hub id, checked before loading.

Shared by :mod:`lmsat.loading.models`, :mod:`lmsat.loading.tokenizers`,
:mod:`lmsat.loading.corpus` and :mod:`lmsat.loading.checkpoints` (so none of them
imports another for it).
"""

from __future__ import annotations

import re
from pathlib import Path

from lmsat.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "~")) and "\\" not in name


def check_model_source(name: str, gguf_file: str | None = None) -> None:
    """Fail early on a local path that does not exist, a GGUF file missing from its folder, or an unreachable hub."""
    path = Path(name).expanduser()
    if path.exists():
        if gguf_file is not None and not (path / gguf_file).is_file():
            raise UserError(f"GGUF file '{gguf_file}' is not in '{name}'; check --gguf-file.")
        return
    if not looks_like_hub_id(name) or name.startswith("/") or name.count("/") > 1:
        raise UserError(f"model path '{name}' does not exist; give an existing folder or a Hugging Face id such as EleutherAI/pythia-70m.")
    check_hub_reachable(name)


def check_hub_reachable(name: str, timeout: float = 5.0) -> None:
    """A quick TCP probe of the hub endpoint, so an offline machine fails in seconds, not after retries.

    Skipped when HF_HUB_OFFLINE is set (then only the local hub cache is used).
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise UserError(
            f"cannot reach the Hugging Face hub ({host}) to load '{name}': {exc.strerror or exc}; "
            "check your network, set HF_HUB_OFFLINE=1 to use the local hub cache, or pass a local folder."
        ) from exc


def hub_error(what: str, name: str, revision: str | None, exc: BaseException) -> UserError:
    """Translate a transformers/hub exception into one actionable line."""
    text = " ".join(str(exc).split())
    low = text.lower()
    rev = f" revision '{revision}'" if revision else ""
    if "revision" in low and ("not a valid" in low or "invalid rev" in low or "not found" in low):
        return UserError(f"{what} '{name}' has no{rev}; check --revision (Pythia revisions look like step143000).")
    if "trust_remote_code" in low or "custom code" in low:
        return UserError(
            f"{what} '{name}' needs the Python code of its own repository, which lmsat does not run unless you pass "
            "--trust-remote-code; pass it only for a repository you trust."
        )
    if "weights only load failed" in low or "weights_only" in low or "unsupported global" in low:
        return UserError(
            f"refused to load the weights of '{name}': its pickled checkpoint holds Python objects other than tensors, "
            "and lmsat only unpickles tensors; use a safetensors copy of the model from a source you trust."
        )
    if Path(name).exists():
        if "gguf" in low or "magic" in low:
            return UserError(f"cannot read the GGUF file of '{name}': {text[:200]}; check that the file is a complete GGUF model.")
        return UserError(f"cannot load {what} from '{name}': {text[:240]}.")
    if any(s in low for s in ("couldn't connect", "connection", "offline", "resolve", "network", "max retries", "timed out", "cannot find the requested files")):
        return UserError(
            f"cannot reach the Hugging Face hub to load {what} '{name}'{rev}; check your network (or HF_HUB_OFFLINE), or pass a local folder."
        )
    if "is not a local folder and is not a valid model identifier" in low or "repository not found" in low or "404" in low:
        return UserError(f"{what} '{name}' was not found on the Hugging Face hub or on disk; check the name.")
    return UserError(f"cannot load {what} '{name}'{rev}: {text[:240]}.")
