"""``ngram`` records: the singular spectrum and W-error of a corpus's n-gram matrix P (``lmsat ngram-rank``; docs/methods.md §9),
and ``ngram_counts``, the counts behind them (an intermediate record the report does not show)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lmsat.kinds.base import UNSET, KindRecord, integer, number
from lmsat.kinds.common import labelled


@dataclass(frozen=True)
class NgramRecord(KindRecord):
    KIND = "ngram"
    VERSION = 1
    WRITER = "lmsat ngram-rank"

    n_tokens: int = UNSET
    n_documents: int | None = UNSET
    n_contexts_observed: int = UNSET
    n_contexts: int = UNSET
    n_ngrams: int = UNSET
    n_ngram_occurrences: int = UNSET
    vocab_size: int = UNSET
    observed_vocab: int = UNSET
    frobenius_norm: float = UNSET
    n_singular_values: int = UNSET
    complete: bool = UNSET
    rank: int | None = UNSET
    method: str = UNSET
    device: str = UNSET
    accuracy: Any = UNSET
    blocks: Any = UNSET
    # W-error threshold (as a string, "0.5") -> smallest k with W-error(k) <= threshold (None: beyond the spectrum).
    dims_for_w_error: dict[str, int | None] = UNSET
    # threshold -> [lo, hi] holding the dimension (equal when the computed values reach it; docs/ngram.md, "Bounds")
    dims_bounds: dict[str, list[int]] = UNSET
    # threshold -> {"estimate", "lo", "hi", "how"}: how = exact | estimated (past the dense limit, stochastic
    # Lanczos quadrature; lo-hi its interval) | bounds (no estimate)
    dims_estimate: dict[str, dict[str, Any]] = UNSET
    rank_bound: int | None = UNSET  # sum over blocks of min(rows, columns) >= rank P
    w_error_at: dict[str, float | None] = UNSET
    noise: dict[str, float] = UNSET  # lmsat.measure.ngram.SamplingNoise.as_dict()
    noise_floor_dimension: int | None = UNSET
    noise_floor_dimension_range: list[int | None] = UNSET
    count_seconds: float | None = UNSET
    spectrum_seconds: float = UNSET

    @property
    def corpus(self) -> str:
        """The corpus's short name: its file or folder name, with the parent for lmsat synth's ``LANG/corpus``."""
        c = self.inputs.get("corpus")
        if isinstance(c, dict):
            c = c.get("source") or c.get("name")
        if c is None:
            return self.key.split("|")[0]
        parts = [p for p in str(c).rstrip("/").split("/") if p]
        if len(parts) > 1 and parts[-1] in ("corpus", "heldout", "text", "data", "train"):
            return "/".join(parts[-2:])
        return parts[-1] if parts else str(c)

    @property
    def n(self) -> int | None:
        return integer(self.inputs.get("n"))

    @property
    def tokenizer_vocab(self) -> int | None:
        tok = self.inputs.get("tokenizer")
        return integer(tok.get("vocab_size")) if isinstance(tok, dict) else integer(self.vocab_size)

    @property
    def tokenizer_fingerprint(self) -> str | None:
        tok = self.inputs.get("tokenizer")
        return tok.get("fingerprint") if isinstance(tok, dict) else None

    @property
    def tokenizer_name(self) -> Any:
        tok = self.inputs.get("tokenizer")
        return tok.get("name") if isinstance(tok, dict) else tok

    def w_error_curve(self) -> np.ndarray | None:
        """W-error(k), k = 0..K, as stored (array ``w_error``)."""
        arrays = self.load_arrays()
        return np.asarray(arrays["w_error"], dtype=np.float64) if "w_error" in arrays else None

    def dimension_at(self, threshold: float) -> tuple[int | None, bool]:
        """(dimension, exact) at which the data reaches W-error <= threshold.

        The stored dimension when the record has one; else read from the stored curve.
        ``exact`` is False when the curve ends above the threshold: the dimension is then
        only known to exceed the curve's length.
        """
        for k, v in (self.dims_for_w_error or {}).items():
            if number(k) is not None and abs(float(k) - threshold) < 1e-9 and v is not None:
                return int(v), True
        curve = self.w_error_curve()
        if curve is None:
            return None, False
        hits = np.nonzero(curve <= threshold + 1e-12)[0]
        if len(hits):
            return int(hits[0]), True
        return len(curve) - 1, False

    def w_error_at_dim(self, d: int) -> float | None:
        curve = self.w_error_curve()
        if curve is None:
            return None
        if d < len(curve):
            return float(curve[d])
        return float(curve[-1]) if curve[-1] == 0 else None


@dataclass(frozen=True)
class NgramCountsRecord(KindRecord):
    KIND = "ngram_counts"
    VERSION = 1
    WRITER = "lmsat ngram-rank"

    n_tokens: int = UNSET
    n_documents: int | None = UNSET
    n_contexts: int = UNSET
    n_ngrams: int = UNSET
    n_ngram_occurrences: int = UNSET
    observed_vocab: int = UNSET
    vocab_size: int = UNSET
    count_seconds: float = UNSET
    tokens_per_second: float = UNSET


LABELS = {"key": "record", "corpus": "corpus", "tokenizer": "tokenizer", "n": "n", "tokens": "tokens", "contexts": "contexts (rows of P)",
          "ngrams": "distinct n-grams", "vocab_size": "vocabulary V", "observed_vocab": "observed tokens (columns of P)",
          "frobenius_norm": "|P|_F", "singular_values": "singular values computed", "complete": "complete spectrum", "method": "method"}


def frame(records: Sequence[NgramRecord]) -> pd.DataFrame:
    """One row per ngram record: corpus, tokenizer, counts, |P|_F and the dimension for each W-error threshold (``ngram.csv``)."""
    rows = []
    for rec in records:
        r = rec.results()
        row: dict[str, Any] = {
            "key": rec.key, "corpus": rec.key.split("|")[0], "tokenizer": rec.key.split("|")[1] if "|" in rec.key else "",
            "n": rec.inputs.get("n"), "tokens": r.get("n_tokens"), "contexts": r.get("n_contexts"), "ngrams": r.get("n_ngrams"),
            "vocab_size": r.get("vocab_size"), "observed_vocab": r.get("observed_vocab"), "frobenius_norm": r.get("frobenius_norm"),
            "singular_values": r.get("n_singular_values"), "complete": r.get("complete"), "method": r.get("method"),
        }
        for t, d in (r.get("dims_for_w_error") or {}).items():
            row[f"d(W-error<={t})"] = d
            est = (r.get("dims_estimate") or {}).get(t)
            if est is not None and est.get("how") != "exact":
                row[f"d(W-error<={t})"] = est.get("estimate")
                row[f"d(W-error<={t}) interval"] = f"{est.get('lo')}-{est.get('hi')}"
                row[f"d(W-error<={t}) how"] = est.get("how")
        for d, v in (r.get("w_error_at") or {}).items():
            row[f"W-error({d})"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def table(records: Sequence[NgramRecord]) -> pd.DataFrame:
    """The report's view: corpus, n, tokenizer, sizes and the dimension at W-error 0.5 and 0.1."""
    rows = []
    for rec in records:
        d5, e5 = rec.dimension_at(0.5)
        d1, e1 = rec.dimension_at(0.1)
        row: dict[str, Any] = {"corpus": rec.corpus, "n": rec.n, "tokenizer": rec.tokenizer_name}
        for k, label in (("n_tokens", "tokens"), ("n_contexts", "contexts (rows of P)"), ("vocab_size", "vocabulary V"),
                         ("frobenius_norm", "|P|_F")):
            v = rec.results().get(k)
            if v is not None and not isinstance(v, (dict, list)):
                row[label] = v
        for t, d, exact in ((0.5, d5, e5), (0.1, d1, e1)):
            est = (rec.dims_estimate or {}).get(str(t)) if rec.dims_estimate is not UNSET else None
            if not exact and est and est.get("estimate") is not None:  # past the dense limit: estimate [interval]
                row[f"dimension at W-error {t}"] = f"~{est['estimate']} [{est['lo']}-{est['hi']}]"
            else:
                row[f"dimension at W-error {t}"] = d if exact else (f"> {d}" if d is not None else None)
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["NgramCountsRecord", "NgramRecord", "frame", "labelled", "table"]
