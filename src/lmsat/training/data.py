"""Training data: corpus -> token stream -> windows, held-out windows, the batch of a step."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmsat.errors import UserError
from lmsat.loading.corpus import CorpusSpec, resolve_files
from lmsat.loading.tokenizers import TextTokenizer
from lmsat.synth.truth import HELDOUT, heldout_reference, language_for_corpus



def batch_indices(step: int, batch_size: int, n_windows: int, seed: int) -> np.ndarray:
    """Window indices of the batch of update ``step``: epoch-wise permutations seeded by (seed, epoch)."""
    j = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs, pos = j // n_windows, j % n_windows
    out = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([int(seed), int(e)]).permutation(n_windows)
        out[epochs == e] = perm[pos[epochs == e]]
    return out


# --- data -----------------------------------------------------------------------------------


def token_stream(corpus: CorpusSpec, tokenizer: TextTokenizer, max_tokens: int | None = None) -> np.ndarray:
    """The corpus as one int64 stream: each document's ids followed by the eos id (if any).

    Read whole into memory, or only its first ``max_tokens`` tokens (documents in corpus order);
    :func:`lmsat.loading.tokens.token_pieces`, the one corpus-to-tokens function.
    """
    from lmsat.loading.tokens import token_pieces

    parts = [ids for ids, _ in token_pieces(corpus, tokenizer, max_tokens)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def windows_of(stream: np.ndarray, seq_len: int) -> np.ndarray:
    """(n, seq_len + 1) view of the stream: windows of seq_len + 1 tokens with stride seq_len."""
    n = (len(stream) - 1) // seq_len
    if n < 1:
        return np.zeros((0, seq_len + 1), dtype=stream.dtype)
    return np.lib.stride_tricks.sliding_window_view(stream, seq_len + 1)[: n * seq_len : seq_len]


def spread(n_total: int, n_pick: int) -> np.ndarray:
    """``n_pick`` indices spread evenly over range(n_total)."""
    return np.unique(np.linspace(0, n_total - 1, num=min(n_pick, n_total)).round().astype(np.int64))


@dataclass
class TrainingData:
    """Training windows, held-out windows, and what they were made from."""

    train: np.ndarray  # (n_train, L + 1)
    eval: np.ndarray  # (n_eval, L + 1)
    eval_reference: np.ndarray | None  # (n_eval, L) true -ln p of each target (NaN where unknown), synthetic languages
    info: dict[str, Any]


def _stream_hash(stream: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(stream, dtype=np.int64).tobytes()).hexdigest()[:16]


def prepare_data(
    corpus: CorpusSpec,
    tokenizer: TextTokenizer,
    seq_len: int,
    eval_tokens: int,
    eval_corpus: CorpusSpec | None = None,
    max_tokens: int | None = None,
) -> TrainingData:
    """Tokenise, window and split the data (module docstring); clear errors when there is too little.

    ``max_tokens`` caps the training stream (the first tokens of the corpus), for corpora too
    large to hold in memory or streamed hub datasets.
    """
    stream = token_stream(corpus, tokenizer, max_tokens)
    if len(stream) == 0:
        raise UserError(f"corpus '{corpus.source}' contains no text; point --data at files with content.")
    all_windows = windows_of(stream, seq_len)
    n_eval = math.ceil(eval_tokens / seq_len)
    info: dict[str, Any] = {"corpus": corpus.describe(), "tokens": int(len(stream)), "stream_hash": _stream_hash(stream)}
    reference = None
    if eval_corpus is not None:
        eval_stream = token_stream(eval_corpus, tokenizer)
        eval_windows = windows_of(eval_stream, seq_len)
        if len(eval_windows) < 1:
            raise UserError(f"held-out corpus '{eval_corpus.source}' has fewer than --seq-len + 1 = {seq_len + 1} tokens; give more text.")
        pick = spread(len(eval_windows), n_eval)
        eval_windows, train_windows = eval_windows[pick], all_windows
        info.update(eval_corpus=eval_corpus.describe(), eval_stream_hash=_stream_hash(eval_stream))
        reference = _synthetic_reference(eval_corpus, eval_stream, tokenizer, seq_len, pick)
    else:
        if len(all_windows) < n_eval + 1:
            raise UserError(
                f"corpus '{corpus.source}' has {len(stream)} tokens: not enough for {n_eval} held-out windows of --seq-len "
                f"{seq_len} plus training; lower --eval-tokens or --seq-len, or give --eval-data."
            )
        eval_windows, train_windows = all_windows[-n_eval:], all_windows[:-n_eval]
        info["eval_corpus"] = "last windows of --data (not trained on)"
    if len(train_windows) < 1:
        raise UserError(f"corpus '{corpus.source}' has fewer than --seq-len + 1 = {seq_len + 1} tokens; use a shorter --seq-len or more text.")
    info.update(train_windows=int(len(train_windows)), eval_windows=int(len(eval_windows)), eval_targets=int(eval_windows.shape[0] * seq_len))
    return TrainingData(train=train_windows, eval=np.ascontiguousarray(eval_windows), eval_reference=reference, info=info)


def _synthetic_reference(
    eval_corpus: CorpusSpec, eval_stream: np.ndarray, tokenizer: TextTokenizer, seq_len: int, pick: np.ndarray
) -> np.ndarray | None:
    """True -ln p of each held-out target when the held-out corpus is a synthetic language's ``heldout/``."""
    per_token = heldout_reference(eval_corpus.source, eval_stream, tokenizer.eos_id)
    if per_token is None:
        return None
    return windows_of(per_token, seq_len)[pick][:, 1:].copy()



@dataclass
class FamilyInputs:
    """What every model of a family shares: the corpus, held-out corpus and tokenizer."""

    corpus: CorpusSpec
    eval_corpus: CorpusSpec | None
    tokenizer: TextTokenizer


def resolve_inputs(
    data: str | Path | CorpusSpec, tokenizer: str | Path | TextTokenizer, eval_data: str | Path | CorpusSpec | None = None
) -> FamilyInputs:
    """Check the corpus, held-out corpus and tokenizer (clear errors); the default held-out corpus of a language."""
    from lmsat.loading.tokenizers import load_tokenizer

    corpus = data if isinstance(data, CorpusSpec) else CorpusSpec(source=str(data))
    if not corpus.is_hub_dataset:
        resolve_files(corpus.source)
    if eval_data is None and not corpus.is_hub_dataset and language_for_corpus(corpus.source) is not None:
        candidate = Path(corpus.source).expanduser().parent / HELDOUT
        if candidate.is_dir():
            eval_data = candidate
    eval_corpus = None
    if eval_data is not None:
        eval_corpus = eval_data if isinstance(eval_data, CorpusSpec) else CorpusSpec(source=str(eval_data))
        if not eval_corpus.is_hub_dataset:
            resolve_files(eval_corpus.source)
    tok = tokenizer if isinstance(tokenizer, TextTokenizer) else load_tokenizer(str(tokenizer))
    if tok.kind == "tiktoken":
        raise UserError(
            f"tokenizer '{tok.name}' is a tiktoken file, which cannot be saved into Hugging Face checkpoints; "
            "give a Hugging Face tokenizer folder or id (e.g. the tokenizer/ folder written by lmsat synth)."
        )
    return FamilyInputs(corpus=corpus, eval_corpus=eval_corpus, tokenizer=tok)

