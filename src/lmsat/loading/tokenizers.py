"""Tokenizers: Hugging Face (id or folder), GGUF vocabularies, tiktoken BPE files.

:func:`load_tokenizer` returns a :class:`TextTokenizer`, one small interface
over all three, with a ``fingerprint`` that is equal for tokenizers with the
same vocabulary, so every model sharing a tokenizer shares one token sample.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmsat.errors import UserError


@dataclass
class TextTokenizer:
    """A tokenizer reduced to what lmsat needs."""

    name: str
    kind: str  # "hf", "gguf" or "tiktoken"
    backend: Any
    vocab_size: int
    eos_id: int | None
    fingerprint: str

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added."""
        if self.kind == "tiktoken":
            return self.backend.encode_ordinary_batch(list(texts))
        try:
            return self.backend(list(texts), add_special_tokens=False)["input_ids"]
        except Exception as exc:  # the Rust tokenizers raise a bare Exception
            if "unk" not in str(exc).lower():
                raise
            raise UserError(self._out_of_vocabulary(texts)) from exc

    def _out_of_vocabulary(self, texts: Sequence[str]) -> str:
        """One line naming the first word of ``texts`` that a tokenizer without an unknown token cannot encode."""
        vocab = self.backend.get_vocab()
        word = next((w for t in texts for w in t.split() if w not in vocab), None)
        which = f"the word {word[:40]!r}" if word is not None else "a piece of the text"
        return (
            f"tokenizer '{self.name}' cannot encode {which}: it has no unknown token, so it covers only its own "
            "vocabulary (as the word-level tokenizer of `lmsat synth` covers its language); give text of that "
            "vocabulary, or another tokenizer."
        )


def _vocab_fingerprint(vocab: dict[str, int] | dict[bytes, int]) -> str:
    items = sorted(((k if isinstance(k, str) else k.hex()), int(v)) for k, v in vocab.items())
    return hashlib.sha256(json.dumps(items, separators=(",", ":")).encode()).hexdigest()[:16]


def from_hf(backend: Any, name: str, kind: str = "hf") -> TextTokenizer:
    """Wrap a loaded Hugging Face tokenizer."""
    vocab = backend.get_vocab()
    return TextTokenizer(
        name=name,
        kind=kind,
        backend=backend,
        vocab_size=max(len(backend), max(vocab.values()) + 1 if vocab else 0),
        eos_id=backend.eos_token_id,
        fingerprint=_vocab_fingerprint(vocab),
    )


def load_tiktoken(path: str | Path) -> TextTokenizer:
    """A tiktoken BPE rank file (e.g. ``gpt2.tiktoken``), with GPT-2's split regex and ``<|endoftext|>``."""
    import tiktoken
    import tiktoken.load

    from lmsat.assets import GPT2_PAT_STR

    path = Path(path)
    try:
        ranks = tiktoken.load.load_tiktoken_bpe(str(path))
    except Exception as exc:
        raise UserError(f"cannot read tiktoken BPE file '{path}': {exc}; pass a file of 'base64-token rank' lines.") from exc
    eot = len(ranks)
    enc = tiktoken.Encoding(name=path.stem, pat_str=GPT2_PAT_STR, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": eot})
    return TextTokenizer(
        name=str(path), kind="tiktoken", backend=enc, vocab_size=enc.n_vocab, eos_id=eot, fingerprint=_vocab_fingerprint(ranks)
    )


def load_tokenizer(name_or_path: str, revision: str | None = None, gguf_file: str | None = None) -> TextTokenizer:
    """Load a tokenizer from a HF id or folder, a GGUF file, or a ``.tiktoken`` BPE file.

    ``name_or_path`` may also be a ``.gguf`` file path itself.
    """
    path = Path(name_or_path).expanduser()
    if path.suffix == ".tiktoken":
        if not path.is_file():
            raise UserError(f"tiktoken file '{name_or_path}' does not exist.")
        return load_tiktoken(path)
    if path.suffix == ".gguf" and gguf_file is None:
        if not path.is_file():
            raise UserError(f"GGUF file '{name_or_path}' does not exist.")
        path, gguf_file = path.parent, path.name
        name_or_path = str(path)
    from transformers import AutoTokenizer

    from lmsat.loading.hub import check_model_source, hub_error

    check_model_source(name_or_path, gguf_file)
    try:
        backend = AutoTokenizer.from_pretrained(str(name_or_path), revision=revision, gguf_file=gguf_file)
    except Exception as exc:
        raise hub_error("tokenizer", name_or_path, revision, exc) from exc
    label = f"{name_or_path}/{gguf_file}" if gguf_file else str(name_or_path)
    return from_hf(backend, label, kind="gguf" if gguf_file else "hf")
