"""The deterministic token sample shared by every model of a tokenizer.

:func:`build_token_sample` tokenises the corpus as one stream (documents joined
by the tokenizer's end-of-text token when it has one), cuts it into
non-overlapping windows of ``seq_len`` tokens, and draws
``ceil(n_tokens / seq_len)`` of them with ``numpy.random.default_rng(seed)``
(without replacement, kept in corpus order). It reads the corpus only until it
holds ``pool_factor * n_tokens`` tokens, so a huge corpus is not tokenised in
full. The same (corpus, tokenizer vocabulary, n_tokens, seq_len, seed) always
gives the same ids, whatever model uses them.

The sample is saved as ``tokens/<hash>.npz`` in the run directory, where
``hash`` is the sha256 of the ids (shape and bytes); every record that used it
stores that hash, and later runs with the same parameters reuse the file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmsat.errors import UserError
from lmsat.loading.corpus import CorpusSpec, iter_document_pieces, iter_documents
from lmsat.loading.tokenizers import TextTokenizer
from lmsat.store import atomic_save_npz, fingerprint

DEFAULT_POOL_FACTOR = 20
_ENCODE_BATCH = 64  # documents per tokenizer call
_ENCODE_CHARS = 1 << 20  # ... or fewer when they hold this many characters (document pieces only)


def token_pieces(
    corpus: CorpusSpec,
    tokenizer: TextTokenizer,
    max_tokens: int | None = None,
    documents: str | None = None,
    stop_at_batch: bool = False,
    description: str | None = None,
) -> Iterator[tuple[np.ndarray, bool]]:
    """The corpus as one token stream, in (int64 ids, ends_document) pieces: lmsat's one corpus-to-tokens function.

    The tokenizer's end-of-text id, when it has one, follows each document (as models
    see documents in training). ``documents`` None reads whole documents
    (:func:`lmsat.loading.corpus.iter_documents`; a document that encodes to nothing is
    skipped); ``file``, ``blank-line`` or ``line`` reads them as pieces of at most ~1 MB
    delimited that way (:func:`lmsat.loading.corpus.iter_document_pieces`). Documents are
    encoded in batches of up to 64 (fast tokenizers encode a batch in parallel).

    ``max_tokens`` ends the stream after exactly that many tokens; with ``stop_at_batch``
    it ends instead after the batch that reaches it (nothing cut: the token sample's
    pool). ``description``: a progress bar over the documents read.

    Used by the token sample (:func:`build_token_sample`), training data
    (:func:`lmsat.training.data.token_stream`) and n-gram counting
    (:func:`lmsat.experiments.ngram.token_stream`).
    """
    budget = max_tokens if max_tokens is not None else -1
    total = 0
    batch: list[str] = []
    ends: list[bool] = []
    warned = getattr(tokenizer.backend, "deprecation_warnings", None)
    if isinstance(warned, dict):
        # A stream feeds no model whole, so HF's "longer than the model's maximum length" warning does not apply.
        warned["sequence-length-is-longer-than-the-specified-maximum"] = True
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]

    def encode() -> Iterator[tuple[np.ndarray, bool]]:
        nonlocal budget, total
        for ids, end in zip(tokenizer.encode_batch(batch), ends):
            if not ids and (not end or documents is None):
                continue
            arr = np.asarray(list(ids) + (eos if end else []), dtype=np.int64)
            if budget >= 0 and not stop_at_batch:
                arr = arr[:budget]
                budget -= arr.size
            total += arr.size
            if arr.size:
                yield arr, end
            if budget == 0:
                return
        batch.clear()
        ends.clear()

    if documents is None:
        pieces: Iterator[tuple[str, bool]] = ((doc, True) for doc in iter_documents(corpus))
    else:
        pieces = iter_document_pieces(corpus, documents)
    if description:
        from lmsat.progress import track

        pieces = track(pieces, description, unit="documents")
    chars = 0
    for piece, end in pieces:
        batch.append(piece)
        ends.append(end)
        chars += len(piece)
        if len(batch) >= _ENCODE_BATCH or (documents is not None and chars >= _ENCODE_CHARS):
            chars = 0
            yield from encode()
            if budget == 0 or (stop_at_batch and 0 <= budget <= total):
                return
    if batch:
        yield from encode()


@dataclass(frozen=True)
class TokenSample:
    """``ids``: int64 array (n_sequences, seq_len) of token ids."""

    ids: np.ndarray
    tokenizer_fingerprint: str
    params: dict[str, Any]

    @property
    def hash(self) -> str:
        return ids_hash(self.ids)

    @property
    def n_tokens(self) -> int:
        return int(self.ids.size)

    @property
    def seq_len(self) -> int:
        return int(self.ids.shape[1])

    def describe(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "n_sequences": int(self.ids.shape[0]),
            "seq_len": self.seq_len,
            "n_tokens": self.n_tokens,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            **self.params,
        }

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / "tokens" / f"{self.hash}.npz"
        if not path.exists():
            atomic_save_npz(
                path,
                ids=self.ids,
                tokenizer_fingerprint=np.array(self.tokenizer_fingerprint),
                params_json=np.array(json.dumps(self.params, sort_keys=True)),
            )
        return path


def ids_hash(ids: np.ndarray) -> str:
    """sha256 (first 16 hex digits) of an id array's shape and int64 bytes."""
    arr = np.ascontiguousarray(ids, dtype=np.int64)
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:16]


def sample_key(corpus: CorpusSpec, tokenizer: TextTokenizer, n_tokens: int, seq_len: int, seed: int) -> str:
    """Cache key of a sample: equal inputs give equal samples."""
    return fingerprint({"corpus": corpus.describe(), "tok": tokenizer.fingerprint, "n": n_tokens, "L": seq_len, "seed": seed})


def build_token_sample(
    corpus: CorpusSpec,
    tokenizer: TextTokenizer,
    n_tokens: int,
    seq_len: int,
    seed: int = 0,
    pool_factor: int = DEFAULT_POOL_FACTOR,
) -> TokenSample:
    """Draw ``ceil(n_tokens / seq_len)`` windows of ``seq_len`` tokens (see module docstring)."""
    if n_tokens < 1 or seq_len < 2:
        raise UserError(f"--tokens must be >= 1 and --seq-len >= 2 (got {n_tokens} and {seq_len}).")
    n_seq = math.ceil(n_tokens / seq_len)
    budget = max(pool_factor * n_seq * seq_len, n_seq * seq_len)
    parts = [ids for ids, _ in token_pieces(corpus, tokenizer, budget, stop_at_batch=True)]
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if not len(stream):
        raise UserError(f"corpus '{corpus.source}' contains no text; point --data at files with content.")
    n_windows = len(stream) // seq_len
    if n_windows < 1:
        raise UserError(
            f"corpus '{corpus.source}' has only {len(stream)} tokens, fewer than one sequence of --seq-len {seq_len}; "
            "use a shorter --seq-len or more text."
        )
    if n_windows < n_seq:
        raise UserError(
            f"corpus '{corpus.source}' has {n_windows * seq_len} tokens in windows of {seq_len}, fewer than the "
            f"{n_seq * seq_len} asked for; lower --tokens or add text."
        )
    pool = np.asarray(stream[: n_windows * seq_len], dtype=np.int64).reshape(n_windows, seq_len)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n_windows, size=n_seq, replace=False))
    params = {"corpus": corpus.describe(), "n_tokens_asked": n_tokens, "seed": seed, "pool_tokens": int(pool.size)}
    return TokenSample(ids=pool[chosen], tokenizer_fingerprint=tokenizer.fingerprint, params=params)


def load_token_sample(path: str | Path) -> TokenSample:
    """Read a sample saved by :meth:`TokenSample.save` and check its hash."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"token sample '{path}' does not exist.")
    try:
        with np.load(path) as data:
            ids = data["ids"]
            tok = str(data["tokenizer_fingerprint"])
            params = json.loads(str(data["params_json"])) if "params_json" in data.files else {}
    except Exception as exc:  # truncated zip, bad CRC, missing member: the file is damaged
        raise UserError(f"token sample '{path}' is damaged ({type(exc).__name__}); delete it and re-run.") from None
    sample = TokenSample(ids=ids, tokenizer_fingerprint=tok, params=params)
    if sample.hash != path.stem:
        raise UserError(f"token sample '{path}' is corrupt (hash {sample.hash} does not match its name); delete it and re-run.")
    return sample


def get_token_sample(
    run_dir: str | Path,
    corpus: CorpusSpec,
    tokenizer: TextTokenizer,
    n_tokens: int,
    seq_len: int,
    seed: int = 0,
) -> TokenSample:
    """The sample for these inputs: reused from ``run_dir/tokens`` if built before, else built and saved."""
    run_dir = Path(run_dir)
    index = run_dir / "tokens" / f"index-{sample_key(corpus, tokenizer, n_tokens, seq_len, seed)}.txt"
    if index.is_file():
        path = run_dir / "tokens" / f"{index.read_text().strip()}.npz"
        try:
            return load_token_sample(path)
        except UserError:  # the sample is deterministic: rebuild it rather than stop
            from lmsat.store import warn

            warn(f"token sample '{path}' is damaged or missing; rebuilding it from the corpus.")
            path.unlink(missing_ok=True)
    sample = build_token_sample(corpus, tokenizer, n_tokens, seq_len, seed)
    sample.save(run_dir)
    from lmsat.store import atomic_write_text

    atomic_write_text(index, sample.hash + "\n")
    return sample
