"""Inherent dimension of text (docs/methods.md §9, the study's Fig. 7): n-gram next-token matrix, spectrum, W-error.

Two stages, each a Store record, so a re-run resumes after counting:

1. ``ngram_counts/<corpus|tokenizer|n=..>``: the corpus is tokenised in batches
   (documents joined by the tokenizer's end-of-text token when it has one, as
   models see them in training) and every n-gram is counted
   (:mod:`lmsat.measure.ngram`); arrays: the count table.
2. ``ngram/<corpus|tokenizer|n=..|options>``: P (one row per kept context, its
   empirical next-token distribution), its singular values
   (:mod:`lmsat.measure.sparse_spectrum`) and W-error(d) = sqrt(sum_{i>d} s_i^2) / |P|_F
   for every computed d; arrays ``singular_values`` and ``w_error``; results
   include |P|_F, counts, vocabulary sizes, method, accuracy and the dimension
   needed for W-error <= 0.5, 0.2, 0.1, 0.05, 0.01.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmsat import __version__
from lmsat.errors import UserError
from lmsat.kinds.ngram import NgramCountsRecord, NgramRecord
from lmsat.loading.corpus import DOCUMENT_SPLITS, CorpusSpec, check_corpus
from lmsat.loading.tokenizers import TextTokenizer
from lmsat.loading.tokens import token_pieces
from lmsat.measure.ngram import (
    CONTEXT_SELECTIONS,
    DEFAULT_SHARD_TOKENS,
    ROW_WEIGHTS,
    NGramCounter,
    NGramCounts,
    next_token_matrix,
    noise_floor_dimension,
    sampling_noise,
)
from lmsat.measure.sparse_spectrum import METHODS, dimension_bounds, head_error_bound, sparse_singular_values, spectrum_dimensions
from lmsat.measure.spectrum import dimension_for_w_error, w_error_curve
from lmsat import progress
from lmsat.store import Record, Store, fingerprint, record_name

KIND = NgramRecord.KIND
COUNTS_KIND = NgramCountsRecord.KIND
THRESHOLDS: tuple[float, ...] = (0.5, 0.2, 0.1, 0.05, 0.01)
REPORT_DIMS: tuple[int, ...] = (64, 128, 256, 512, 768, 1024, 2048, 4096)


@dataclass(frozen=True)
class NGramSettings:
    """Options of one ``ngram-rank`` measurement (see ``lmsat ngram-rank --help``)."""

    n: int = 5
    min_count: int = 1
    max_contexts: int | None = None
    context_selection: str = "frequent"
    seed: int = 0
    row_weight: str = "uniform"
    top_k: int | None = None
    max_tokens: int | None = None
    method: str = "auto"
    max_dense: int | None = None
    shard_tokens: int = DEFAULT_SHARD_TOKENS
    documents: str = "file"

    def validate(self) -> None:
        """Raise :class:`UserError` for any option a user can get wrong."""
        if self.n < 2:
            raise UserError(f"--n must be at least 2 (one context token and the next token); got {self.n}. The study uses 5.")
        if self.min_count < 1:
            raise UserError(f"--min-count must be at least 1; got {self.min_count}.")
        if self.max_contexts is not None and self.max_contexts < 1:
            raise UserError(f"--max-contexts must be at least 1 (or left out for all contexts); got {self.max_contexts}.")
        if self.context_selection not in CONTEXT_SELECTIONS:
            raise UserError(f"--context-selection must be one of {', '.join(CONTEXT_SELECTIONS)}; got '{self.context_selection}'.")
        if self.row_weight not in ROW_WEIGHTS:
            raise UserError(f"--row-weight must be one of {', '.join(ROW_WEIGHTS)}; got '{self.row_weight}'.")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"--top-k must be at least 1 (or left out for all singular values); got {self.top_k}.")
        if self.max_tokens is not None and self.max_tokens < self.n:
            raise UserError(f"--max-tokens must be at least --n ({self.n}) to hold one n-gram; got {self.max_tokens}.")
        if self.method not in METHODS:
            raise UserError(f"--method must be one of {', '.join(METHODS)}; got '{self.method}'.")
        if self.max_dense is not None and self.max_dense < 1:
            raise UserError(f"--max-dense must be at least 1; got {self.max_dense}.")
        if self.documents not in DOCUMENT_SPLITS:
            raise UserError(f"--documents must be one of {', '.join(DOCUMENT_SPLITS)}; got '{self.documents}'.")
        if self.shard_tokens < self.n:
            raise UserError(f"--shard-tokens must be at least --n ({self.n}); got {self.shard_tokens}.")


def corpus_name(corpus: CorpusSpec) -> str:
    """Short human name of a corpus: folder/file stem, or the hub dataset with its config and split."""
    if corpus.is_hub_dataset:
        name = corpus.source[len("hf:"):]
        if corpus.config:
            name += f"/{corpus.config}"
        return f"{name}:{corpus.split}"
    if any(ch in corpus.source for ch in "*?["):
        return corpus.source
    path = Path(corpus.source).expanduser()
    return path.stem if path.is_file() else path.name or str(path)


def tokenizer_name(tokenizer: TextTokenizer) -> str:
    """Short human name: hub id as given, or the file/folder stem of a local tokenizer."""
    name = tokenizer.name.rstrip("/")
    path = Path(name)
    if tokenizer.kind in ("tiktoken", "gguf"):
        return path.stem
    return path.name if path.exists() else name


def count_key(corpus: CorpusSpec, tokenizer: TextTokenizer, settings: NGramSettings) -> str:
    key = f"{corpus_name(corpus)}|{tokenizer_name(tokenizer)}|n={settings.n}"
    key += f"|max_tokens={settings.max_tokens}" if settings.max_tokens else ""
    return key + (f"|docs={settings.documents}" if settings.documents != "file" else "")


def ngram_key(corpus: CorpusSpec, tokenizer: TextTokenizer, settings: NGramSettings) -> str:
    """``corpus|tokenizer|n=5`` plus every option that differs from the study's defaults."""
    s = settings
    parts = [count_key(corpus, tokenizer, s)]
    if s.min_count > 1:
        parts.append(f"min_count={s.min_count}")
    if s.max_contexts is not None:
        parts.append(f"max_contexts={s.max_contexts}:{s.context_selection}" + (f":seed={s.seed}" if s.context_selection == "random" else ""))
    if s.row_weight != "uniform":
        parts.append(f"rows={s.row_weight}")
    if s.top_k is not None:
        parts.append(f"top_k={s.top_k}")
    if s.method != "auto":
        parts.append(f"method={s.method}")
    if s.max_dense is not None:  # changes which blocks get a full spectrum, so the result
        parts.append(f"max_dense={s.max_dense}")
    return "|".join(parts)


def _corpus_inputs(corpus: CorpusSpec) -> dict[str, Any]:
    desc = dict(corpus.describe())
    if not corpus.is_hub_dataset and not any(ch in corpus.source for ch in "*?["):
        desc["source"] = str(Path(corpus.source).expanduser().resolve())
    return desc


def _tokenizer_inputs(tokenizer: TextTokenizer) -> dict[str, Any]:
    return {
        "name": tokenizer.name,
        "kind": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "fingerprint": tokenizer.fingerprint,
    }


def token_stream(
    corpus: CorpusSpec, tokenizer: TextTokenizer, max_tokens: int | None = None, documents: str = "file"
) -> Iterator[tuple[np.ndarray, bool]]:
    """Token ids of the corpus as (int64 array, ends_document) pieces; end-of-text appended after each document.

    Documents are delimited by ``documents`` (``file``, ``blank-line`` or ``line``); the stream
    stops after ``max_tokens`` tokens: :func:`lmsat.loading.tokens.token_pieces`, the one
    corpus-to-tokens function.
    """
    yield from token_pieces(corpus, tokenizer, max_tokens, documents, description="tokenising and counting n-grams")


def count_corpus(
    corpus: CorpusSpec, tokenizer: TextTokenizer, settings: NGramSettings, spill_dir: str | Path | None = None
) -> tuple[NGramCounts, int]:
    """The n-gram counts of the (capped) corpus and its number of documents."""
    counter = NGramCounter(settings.n, tokenizer.vocab_size, shard_tokens=settings.shard_tokens, spill_dir=spill_dir)
    n_docs = 0
    for ids, end in token_stream(corpus, tokenizer, settings.max_tokens, settings.documents):
        if ids.max() >= tokenizer.vocab_size:
            raise UserError(
                f"tokenizer '{tokenizer.name}' produced id {int(ids.max())} >= its vocabulary size {tokenizer.vocab_size}; "
                "the tokenizer files are inconsistent."
            )
        counter.add(ids)
        n_docs += int(end)
    return counter.finish(), n_docs


def _check_same_inputs(record: Record, inputs: dict[str, Any], key: str) -> None:
    if record.inputs.get("inputs_fingerprint") != inputs["inputs_fingerprint"]:
        raise UserError(
            f"the run directory already holds a '{record.kind}' result '{key}' made from different inputs "
            f"(corpus path or tokenizer vocabulary); use another --output, or --force to replace it."
        )


def run_counts(
    corpus: CorpusSpec, tokenizer: TextTokenizer, settings: NGramSettings, output: str | Path, force: bool = False,
    counter: Any = None,
) -> tuple[NGramCounts, Record]:
    """Stage 1: count (or reload) the n-grams; one ``ngram_counts`` record holding the count table.

    ``counter`` (default :func:`count_corpus`) counts: ``lmsat.experiments.ngram_ray`` passes its Ray counter.
    """
    store = Store(output)
    key = count_key(corpus, tokenizer, settings)
    inputs: dict[str, Any] = {
        "corpus": _corpus_inputs(corpus),
        "tokenizer": _tokenizer_inputs(tokenizer),
        "n": settings.n,
        "max_tokens": settings.max_tokens,
        "documents": settings.documents,
        "documents_joined_by": "eos" if tokenizer.eos_id is not None else "nothing",
        "lmsat_version": __version__,
    }
    inputs["inputs_fingerprint"] = fingerprint({k: v for k, v in inputs.items() if k != "lmsat_version"})
    done = store.get(COUNTS_KIND, key)
    if done is not None and "documents" not in done.inputs:
        done = None  # counted before --documents existed (1 MB read blocks were documents): count again
    if done is not None and not force:
        _check_same_inputs(done, inputs, key)
        return NGramCounts.from_arrays(done.load_arrays()), done
    spill = Path(output) / COUNTS_KIND / f".spill-{record_name(key)}"
    shutil.rmtree(spill, ignore_errors=True)
    start = time.perf_counter()
    try:
        counts, n_docs = (counter or count_corpus)(corpus, tokenizer, settings, spill_dir=spill)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    seconds = time.perf_counter() - start
    if counts.n_ngrams == 0:
        raise UserError(
            f"corpus '{corpus.source}' has only {counts.n_tokens} tokens with this tokenizer, fewer than one {settings.n}-gram; "
            "use more text or a smaller --n."
        )
    results = {
        "n_tokens": counts.n_tokens,
        "n_documents": n_docs,
        "n_contexts": counts.n_contexts,
        "n_ngrams": counts.n_ngrams,
        "n_ngram_occurrences": counts.n_occurrences,
        "observed_vocab": int(len(counts.observed_vocab())),
        "vocab_size": tokenizer.vocab_size,
        "count_seconds": seconds,
        "tokens_per_second": counts.n_tokens / max(seconds, 1e-9),
    }
    record = NgramCountsRecord(key=key, inputs=inputs, **results).put(store, arrays=counts.arrays())
    return counts, record


def w_error_at(curve: np.ndarray, complete: bool, dims: tuple[int, ...] = REPORT_DIMS) -> dict[str, float | None]:
    """W-error at each d of ``dims``: from the curve; 0 past the rank when the spectrum is complete; None if unknown."""
    out: dict[str, float | None] = {}
    for d in dims:
        if d < len(curve):
            out[str(d)] = float(curve[d])
        else:
            out[str(d)] = 0.0 if complete else None
    return out


def run_ngram(
    corpus: CorpusSpec,
    tokenizer: TextTokenizer,
    settings: NGramSettings,
    output: str | Path,
    device: str = "cpu",
    force: bool = False,
    counter: Any = None,
) -> Record:
    """Count, build P, compute its spectrum and W-error; one ``ngram`` record (resumes after counting).

    ``counter``: how stage 1 counts (see :func:`run_counts`; ``--ray`` passes the Ray counter).
    """
    settings.validate()
    check_corpus(corpus)
    store = Store(output)
    key = ngram_key(corpus, tokenizer, settings)
    counts_key = count_key(corpus, tokenizer, settings)
    source_fp = fingerprint({"corpus": _corpus_inputs(corpus), "tokenizer": _tokenizer_inputs(tokenizer)})
    done = store.get(KIND, key)
    if done is not None and "documents" not in done.inputs.get("settings", {}):
        done = None  # made before --documents existed: recompute
    if done is not None and not done.results.get("complete", True) and "dims_estimate" not in done.results and settings.top_k is None:
        done = None  # a truncated spectrum from before the tail estimate (top 1,024 values only): recompute
    if done is not None and not force:
        if done.inputs.get("source_fingerprint") != source_fp:
            raise UserError(
                f"the run directory already holds an 'ngram' result '{key}' made from different inputs "
                "(corpus path or tokenizer vocabulary); use another --output, or --force to replace it."
            )
        return done
    counts, counts_rec = run_counts(corpus, tokenizer, settings, output, force=force, counter=counter)

    start = time.perf_counter()
    from_gram = getattr(counter, "p_spectrum", None)  # --ray: P^T P accumulated by bucket tasks (experiments.ngram_ray)
    if from_gram is not None:
        p, noise, spectrum = from_gram(counts, settings, device)
    else:
        p = next_token_matrix(
            counts,
            min_count=settings.min_count,
            max_contexts=settings.max_contexts,
            selection=settings.context_selection,  # type: ignore[arg-type]
            seed=settings.seed,
            row_weight=settings.row_weight,  # type: ignore[arg-type]
        )
    if p.shape[0] == 0:
        raise UserError(
            f"no context occurs at least --min-count {settings.min_count} times (the most frequent occurs "
            f"{int(counts.context_counts().max())} times); lower --min-count."
        )
    n_tokens, n_contexts_observed = counts.n_tokens, counts.n_contexts
    del counts  # the count table is stored; free it before the spectrum's own memory peak
    if from_gram is None:
        noise = sampling_noise(p)  # docs/ngram.md, "Sampling noise"
        what = f"{settings.top_k:,} largest singular values" if settings.top_k else "singular values"
        with progress.status(f"{what} of P: {p.shape[0]:,} contexts x {p.shape[1]:,} observed tokens, {p.matrix.nnz:,} non-zeros"):
            spectrum = sparse_singular_values(
                p.matrix, top_k=settings.top_k, method=settings.method, device=device, max_dense=settings.max_dense, seed=settings.seed  # type: ignore[arg-type]
            )
    seconds = time.perf_counter() - start
    s = spectrum.singular_values
    curve = w_error_curve(s, spectrum.frobenius_norm)
    dims = {str(t): dimension_for_w_error(s, t, spectrum.frobenius_norm) for t in THRESHOLDS}
    results = {
        "n_tokens": n_tokens,
        "n_documents": counts_rec.results.get("n_documents"),
        "n_contexts_observed": n_contexts_observed,
        "n_contexts": p.shape[0],
        "n_ngrams": p.n_ngrams_kept,
        "n_ngram_occurrences": p.n_occurrences_kept,
        "vocab_size": tokenizer.vocab_size,
        "observed_vocab": p.shape[1],
        "frobenius_norm": spectrum.frobenius_norm,
        "n_singular_values": int(len(s)),
        "complete": spectrum.complete,
        "rank": int(len(s)) if spectrum.complete else None,
        "method": spectrum.method,
        "device": spectrum.device,
        "accuracy": spectrum.accuracy,
        "blocks": spectrum.blocks,
        "dims_for_w_error": dims,
        # [lo, hi] surely holding each dim: equal when reached by the computed values, widened by the float32 /
        # Ritz error bounds (docs/ngram.md, "Bounds")
        "dims_bounds": {
            str(t): list(dimension_bounds(s, spectrum.frobenius_norm, spectrum.rank_bound or len(s), t, head_error=head_error_bound(spectrum)))
            for t in THRESHOLDS
        },
        # every dim with an estimate and an interval: exact, or past the dense limit estimated by stochastic
        # Lanczos quadrature (docs/ngram.md, "Past the dense limit")
        "dims_estimate": {str(t): v for t, v in spectrum_dimensions(spectrum, THRESHOLDS).items()},
        "rank_bound": spectrum.rank_bound,
        "w_error_at": w_error_at(curve, spectrum.complete),
        "noise": noise.as_dict(),
        "noise_floor_dimension": noise_floor_dimension(curve, noise.floor),
        "noise_floor_dimension_range": [noise_floor_dimension(curve, noise.floor_high), noise_floor_dimension(curve, noise.floor_low)],
        "count_seconds": counts_rec.results.get("count_seconds"),
        "spectrum_seconds": seconds,
    }
    inputs = {
        **{k: v for k, v in counts_rec.inputs.items() if k != "inputs_fingerprint"},
        "settings": asdict(settings),
        "device": spectrum.device,
        "counts_key": counts_key,
        "source_fingerprint": source_fp,
        "lmsat_version": __version__,
    }
    arrays = {"singular_values": s, "w_error": curve}
    if spectrum.tail is not None:  # the estimated curve past the computed values: d, W-error and its interval
        arrays["tail_curve"] = tail_w_error_curve(spectrum.tail, spectrum.frobenius_norm, len(s))
    return NgramRecord(key=key, inputs=inputs, **results).put(store, arrays=arrays)


def tail_w_error_curve(tail: Any, frobenius_norm: float, start: int, points: int = 2000) -> np.ndarray:
    """(4, <= points) array: estimated d, W-error(d) and its interval (lo, hi) past the ``start`` computed values,
    from the tail's quadrature (:meth:`lmsat.measure.sparse_spectrum.TailQuadrature.curve`)."""
    c = tail.curve()
    total = frobenius_norm * frobenius_norm
    keep = c["count"] >= start
    d = c["count"][keep]
    w = [np.sqrt(np.clip((total - c[k][keep]) / total, 0.0, 1.0)) for k in ("energy", "energy_hi", "energy_lo")]
    order = np.argsort(d)
    out = np.stack([d[order], *(x[order] for x in w)])
    if out.shape[1] > points:
        out = out[:, np.unique(np.linspace(0, out.shape[1] - 1, points).astype(np.int64))]
    return out
