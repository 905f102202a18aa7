"""Reading a written synthetic language's truth record (used by training's held-out gap and by figures).

Lives below :mod:`lmsat.experiments` so that :mod:`lmsat.training` can use it without importing
experiments (imports run loading -> measure -> experiments -> store -> figures/report -> cli).
:func:`lmsat.experiments.synth.write_language` writes what these functions read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmsat.store import Record, Store

KIND = "synth"
KEY = "language"
CORPUS, HELDOUT, TOKENIZER = "corpus", "heldout", "tokenizer"


def language_record(folder: str | Path) -> Record | None:
    """The truth record of the language written in ``folder`` (None if there is none)."""
    return Store(folder).get(KIND, KEY)


def language_for_corpus(source: str | Path) -> Record | None:
    """The truth record of the language a corpus path belongs to (``DIR``, ``DIR/corpus`` or ``DIR/heldout``)."""
    path = Path(source).expanduser()
    for folder in (path, path.parent):
        if folder.is_dir():
            rec = language_record(folder)
            if rec is not None:
                return rec
    return None


def heldout_reference(source: str | Path, stream: np.ndarray, eos_id: int | None) -> np.ndarray | None:
    """True -ln p of each position of a tokenised held-out stream of a language (NaN at eos positions).

    ``source`` must be the ``heldout/`` folder (or a file in it) of a language written by
    :func:`lmsat.experiments.synth.write_language`, and ``stream`` its tokens in file order with
    eos after each file (as lmsat's loaders produce). Returns None when that is not the case,
    e.g. another tokenizer, so callers fall back to the loss alone.
    """
    path = Path(source).expanduser()
    folder = path if path.is_dir() else path.parent
    if folder.name != HELDOUT:
        return None
    rec = language_record(folder.parent)
    if rec is None or "heldout_neg_log_probs" not in rec.arrays:
        return None
    arrays = rec.load_arrays()
    stream = np.asarray(stream)
    words = stream != eos_id if eos_id is not None else np.ones(len(stream), dtype=bool)
    if int(words.sum()) != len(arrays["heldout_tokens"]) or not np.array_equal(stream[words], arrays["heldout_tokens"]):
        return None
    out = np.full(len(stream), np.nan)
    out[words] = arrays["heldout_neg_log_probs"]
    return out
