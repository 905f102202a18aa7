"""Write a synthetic language to disk: corpus, held-out text, tokenizer and its truth record.

Layout of the output folder ``DIR`` (every lmsat command reads it like any corpus)::

    DIR/corpus/part-00000.txt ...   training text: one chain per file, lines of ``doc_tokens``
                                    words "w0".."w{V-1}" separated by spaces
    DIR/heldout/part-00000.txt ...  held-out text, same format, independent random stream
    DIR/tokenizer/                  Hugging Face fast tokenizer (WordLevel w0..w{V-1}, then
                                    "<eos>" = id V; whitespace pre-tokenizer)
    DIR/synth/language.json (+.npz) the truth record (kind "synth")
    DIR/figures/true_spectra.png    singular values of P and of the row-centred log P

A file is one chain of the source: its lines are documents for display only, the
chain continues from one line to the next. lmsat's text loader reads a .txt file in
blocks of about 1 MB, not line by line, so a model reading the corpus sees every
token's true context; each file (chain) starts from the fixed start context (see
:mod:`lmsat.synth.generator`). Token id i is the word ``w{i}``, so tokenising the text
gives back exactly the generated ids.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmsat import __version__
from lmsat.errors import UserError
from lmsat.kinds.synth import SynthRecord
from lmsat.store import Record, Store
from lmsat.synth.generator import (
    Language,
    LanguageSpec,
    Sample,
    centered_log_probs,
    empirical_context_entropy,
    generate,
    make_language,
    numerical_rank,
    row_entropies,
    stationary_context_distribution,
    svd_truncation_gaps,
)

from lmsat.synth.truth import KEY, KIND, heldout_reference, language_for_corpus, language_record  # noqa: E402,F401  (one implementation)
EOS_TOKEN = "<eos>"
from lmsat.synth.truth import CORPUS, HELDOUT, TOKENIZER  # noqa: E402
#: Matrices P and centred log P are stored in the record when C x V is at most this.
STORE_MATRICES_MAX = 1 << 20
#: svd_truncation_gap is computed for d = 0..min(C, V, this).
TRUNCATION_MAX_RANK = 256
_INCOMPLETE = ".synth-incomplete"


@dataclass(frozen=True)
class TextLayout:
    """How generated tokens are written: ``doc_tokens`` words per line, ``chain_lines`` lines per file."""

    doc_tokens: int = 64
    chain_lines: int = 512

    @property
    def chain_tokens(self) -> int:
        return self.doc_tokens * self.chain_lines

    def validate(self) -> None:
        if self.doc_tokens < 1 or self.chain_lines < 1:
            raise UserError(f"--doc-tokens must be >= 1 (got {self.doc_tokens}).")


def word(i: int) -> str:
    """The word of token id ``i``: ``w{i}``."""
    return f"w{i}"


def write_tokenizer(vocab: int, folder: str | Path) -> Path:
    """A Hugging Face fast tokenizer: WordLevel ``w0..w{V-1}`` (ids 0..V-1), ``<eos>`` = V.

    Whitespace-split pre-tokenizer; ``<eos>`` is the eos and bos token. Text with
    any other word is rejected by the tokenizer (the language has no unknown words).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = {word(i): i for i in range(vocab)}
    table[EOS_TOKEN] = vocab
    backend = Tokenizer(models.WordLevel(vocab=table, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN)
    folder = Path(folder)
    fast.save_pretrained(str(folder))
    return folder


def write_text(sample: Sample, vocab: int, folder: Path, doc_tokens: int) -> list[Path]:
    """One file per chain, ``doc_tokens`` words per line; returns the files."""
    words = np.array([word(i) for i in range(vocab)], dtype=object)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, chain in enumerate(sample.chains()):
        lines = [" ".join(words[chain[i : i + doc_tokens]]) for i in range(0, len(chain), doc_tokens)]
        path = folder / f"part-{n:05d}.txt"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def truth_results(lang: Language, train: Sample, heldout: Sample) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The exact quantities of the language and of the generated text (module docstring of the generator)."""
    from lmsat.measure.spectrum import singular_values, w_error

    spec = lang.spec
    c_count, v = lang.probs.shape
    logits = centered_log_probs(lang)
    s_probs = singular_values(lang.probs)
    s_logits = singular_values(logits)
    h_rows = row_entropies(lang.probs)
    counts = train.context_counts(c_count)
    pi = stationary_context_distribution(lang)
    empirical = empirical_context_entropy(lang.probs, counts)
    stationary = float((pi * h_rows).sum()) if pi is not None else None
    weights = pi if pi is not None else counts / counts.sum()
    marginal = weights @ lang.probs
    truncation = svd_truncation_gaps(lang, weights, min(c_count, v, TRUNCATION_MAX_RANK))
    results: dict[str, Any] = {
        **spec.describe(),
        "n_tokens": train.n_tokens,
        "heldout_tokens": heldout.n_tokens,
        "n_chains": int(len(train.chain_lengths)),
        "true_entropy": train.realised_entropy(),
        "true_entropy_standard_error": train.entropy_standard_error(),
        "heldout_true_entropy": heldout.realised_entropy(),
        "heldout_true_entropy_standard_error": heldout.entropy_standard_error(),
        "expected_entropy_empirical": empirical,
        "stationary_entropy": stationary,
        "expected_entropy": stationary if stationary is not None else empirical,
        "expected_entropy_weighting": "stationary" if stationary is not None else "empirical",
        "unigram_entropy": float(-(marginal * np.log(marginal)).sum()),
        "uniform_entropy": float(np.log(v)),
        "numerical_rank_probs": numerical_rank(s_probs, (c_count, v)),
        "numerical_rank_logits": numerical_rank(s_logits, (c_count, v)),
        "w_error_probs_at_rank": w_error(s_probs, spec.rank),
        "w_error_logits_at_rank": w_error(s_logits, spec.rank),
        "svd_truncation_gap": {str(d): float(truncation[d]) for d in sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, spec.rank}) if d < len(truncation)},
        "contexts_visited": int((counts > 0).sum()),
        "context_map": "explicit table" if lang.context_table is not None else "tabulation hash",
        "start_context": f"{spec.order} virtual tokens {word(0)} before each chain (not written)",
        "eos_token": EOS_TOKEN,
        "eos_id": v,
        "notes": [
            "entropies in nats/token; true_entropy = mean -ln p_true over the generated training tokens",
            "expected_entropy_empirical = sum_c n_c/n H(P_c) over the visited contexts; "
            "stationary_entropy = sum_c pi_c H(P_c), pi the stationary context distribution",
            "singular_values_logits are those of log P minus its row means (the logits that give P)",
            "svd_truncation_gap[d] = expected KL(P_c || softmax of the rank-d truncated SVD of the centred logits), "
            "an upper bound on the smallest gap of a rank-d softmax head",
        ],
    }
    arrays: dict[str, np.ndarray] = {
        "singular_values_probs": s_probs,
        "singular_values_logits": s_logits,
        "context_entropy": h_rows,
        "context_counts": counts,
        "svd_truncation_gap": truncation,
        "heldout_tokens": heldout.tokens.astype(np.int32),
        "heldout_neg_log_probs": heldout.neg_log_probs,
    }
    if pi is not None:
        arrays["stationary_context_probs"] = pi
    if c_count * v <= STORE_MATRICES_MAX:
        arrays["probs"] = lang.probs
        arrays["logits"] = logits
    return results, arrays


def _clear(output: Path) -> None:
    """Remove a previous (or interrupted) language from ``output``, staging folders included."""
    for name in (CORPUS, HELDOUT, TOKENIZER):
        shutil.rmtree(output / name, ignore_errors=True)
    for staging in output.glob(".synth-staging-*"):
        shutil.rmtree(staging, ignore_errors=True)
    Store(output).delete(KIND, KEY)
    (output / _INCOMPLETE).unlink(missing_ok=True)


def write_language(
    spec: LanguageSpec,
    output: str | Path,
    n_tokens: int = 2_000_000,
    heldout_tokens: int = 131_072,
    layout: TextLayout = TextLayout(),
    force: bool = False,
) -> Record:
    """Generate a language and write corpus, held-out text, tokenizer and truth record to ``output``.

    ``n_tokens`` and ``heldout_tokens`` are rounded up to whole lines of
    ``layout.doc_tokens``. Re-running with the same inputs returns the existing
    record; different inputs in the same folder are refused unless ``force``.
    Everything is written in a staging folder and moved into place; the record,
    written last, marks the language complete.
    """
    spec.validate()
    layout.validate()
    if n_tokens < 1 or heldout_tokens < 1:
        raise UserError(f"--tokens and --heldout-tokens must be >= 1 (got {n_tokens} and {heldout_tokens}).")
    doc = layout.doc_tokens
    n_tokens, heldout_tokens = -(-n_tokens // doc) * doc, -(-heldout_tokens // doc) * doc
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"output '{output}' exists and is not a folder; give a folder for the language.")
    inputs = {**spec.describe(), "n_tokens": n_tokens, "heldout_tokens": heldout_tokens,
              "doc_tokens": doc, "chain_tokens": layout.chain_tokens, "lmsat_version": __version__}
    existing = language_record(output)
    if existing is not None and not force:
        same = {k: v for k, v in existing.inputs.items() if k != "lmsat_version"} == {k: v for k, v in inputs.items() if k != "lmsat_version"}
        if same:
            return existing
        raise UserError(f"'{output}' already holds a different synthetic language; use another -o folder or --force to replace it.")
    leftovers = [name for name in (CORPUS, HELDOUT, TOKENIZER) if (output / name).exists()]
    if existing is None and leftovers and not (output / _INCOMPLETE).exists() and not force:
        raise UserError(f"'{output}' already has {', '.join(leftovers)}/ that lmsat synth did not write; use another -o folder or --force.")

    lang = make_language(spec)
    train = generate(lang, n_tokens, layout.chain_tokens)
    held = generate(lang, heldout_tokens, layout.chain_tokens, heldout=True)
    results, arrays = truth_results(lang, train, held)

    output.mkdir(parents=True, exist_ok=True)
    _clear(output)
    staging = output / f".synth-staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_text(train, spec.vocab, staging / CORPUS, doc)
        write_text(held, spec.vocab, staging / HELDOUT, doc)
        write_tokenizer(spec.vocab, staging / TOKENIZER)
        (output / _INCOMPLETE).write_text("lmsat synth was interrupted here; re-run it to rewrite the language.\n")
        for name in (CORPUS, HELDOUT, TOKENIZER):
            os.replace(staging / name, output / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record = SynthRecord(key=KEY, inputs=inputs, **results).put(Store(output), arrays)
    (output / _INCOMPLETE).unlink(missing_ok=True)
    return record
