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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmsat.errors import UserError
from lmsat.loading.corpus import CorpusSpec, iter_documents
from lmsat.loading.tokenizers import TextTokenizer
from lmsat.store import atomic_save_npz, fingerprint

DEFAULT_POOL_FACTOR = 20
_ENCODE_BATCH = 64


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
    stream: list[int] = []
    batch: list[str] = []

    def flush() -> None:
        if not batch:
            return
        for ids in tokenizer.encode_batch(batch):
            if ids:
                stream.extend(ids)
                if tokenizer.eos_id is not None:
                    stream.append(tokenizer.eos_id)
        batch.clear()

    for doc in iter_documents(corpus):
        batch.append(doc)
        if len(batch) >= _ENCODE_BATCH:
            flush()
            if len(stream) >= budget:
                break
    flush()
    if not stream:
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
