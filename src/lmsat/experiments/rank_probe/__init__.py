"""Rank-constrained heads on frozen representations (docs/methods.md §8, §7; study Fig. 6, 8, 9).

The language model is frozen. Its final pre-head representations h_t (after the
final norm: exactly the input of its LM head) and next-token targets y_t are
computed once, for a training sample and a disjoint held-out sample, and cached
on disk. On them, for each rank r, a head W = A B (A: V x r, B: r x d) is trained
on next-token cross-entropy

    loss = mean_t [ logsumexp(W h_t) - (W h_t)[y_t] ]      (nats/token)

with AdamW, linear warm-up and cosine decay. Per rank: a short run for each
learning rate of a grid (evaluated on a development slice of the *training*
sample, so the held-out sample is never used for a choice), then the full budget
at the best rate, evaluated on the held-out sample: loss, perplexity exp(loss),
top-1 accuracy. Reference rows: an unconstrained trained head (rank min(V, d))
and the model's own head on the same held-out tokens. Next to each probe loss:
W-error(r) of the model's own head (docs/methods.md §7, Fig. 8).

Token samples. One sample of whole windows of ``seq_len`` tokens is drawn with
:func:`lmsat.loading.tokens.get_token_sample` (windows are non-overlapping
positions of the token stream, drawn without replacement); a seeded
permutation of its windows gives the held-out windows, the rest are training
windows (:func:`split_windows`): no token position is in both.
Each window of L tokens gives L - 1 (representation, next token) pairs.

Feature cache (``RUN_DIR/features/<hash>/``). ``<split>_h.npy`` (rows x d,
float16 by default) and ``<split>_y.npy`` (rows, int32) are numpy memory maps
filled block by block (one block = one forward batch of sequences), so the
sample may be larger than RAM. After each block the file is flushed and
``progress.json`` records the block's sha256, so an interrupted extraction
resumes at the first missing block. ``meta.json`` is written last; on reuse
every block's sha256 is checked again. ``<hash>`` covers the model (name,
revision, GGUF file, dtype), the token sample, the split and the storage dtype.

Records (:class:`lmsat.store.Store`). Kind ``rank_probe``: one record per
finished (rank, learning rate) run, keys ``<model>|r=64|lr=0.01|search`` and
``<model>|r=64|lr=0.01|final``. Kind ``rank_probe_ref``: ``<model>|own-head``
(with the head's singular values and W-error curve as arrays) and the trained
full-rank head's ``<model>|full|lr=...|search`` / ``|final`` runs.

Modules (nanoGPT-style, each one idea): :mod:`.settings` (the budget and recipe, the
window split), :mod:`.features` (the feature cache), :mod:`.fit` (training and evaluating
one head), :mod:`.run` (search, references, the whole measurement, the table).
"""

from __future__ import annotations

from lmsat.experiments.rank_probe.features import (
    FeatureCache,
    FeatureSplit,
    extract_features,
    feature_identity,
    open_feature_cache,
    verify_split,
    write_feature_cache,
)
from lmsat.experiments.rank_probe.fit import (
    TrainResult,
    chunk_rows,
    evaluate_head,
    lr_factor,
    train_head,
)
from lmsat.experiments.rank_probe.run import (
    check_resumable,
    own_head_reference,
    plan_models,
    probe_rank,
    rank_probe_table,
    run_rank_probe,
)
from lmsat.experiments.rank_probe.settings import (
    AUTO_CHUNK_LOGITS,
    AUTO_MIN_CHUNK_TOKENS,
    DEFAULT_LR_GRID,
    FEATURE_DTYPES,
    FEATURES_FORMAT,
    FULL_RANK_HEADS,
    KIND,
    REF_KIND,
    STUDY_LR_RANGE,
    ProbeSettings,
    default_ranks,
    dev_windows,
    split_windows,
)

__all__ = [
    "AUTO_CHUNK_LOGITS",
    "AUTO_MIN_CHUNK_TOKENS",
    "DEFAULT_LR_GRID",
    "FEATURES_FORMAT",
    "FEATURE_DTYPES",
    "FULL_RANK_HEADS",
    "FeatureCache",
    "FeatureSplit",
    "KIND",
    "ProbeSettings",
    "REF_KIND",
    "STUDY_LR_RANGE",
    "TrainResult",
    "check_resumable",
    "chunk_rows",
    "default_ranks",
    "dev_windows",
    "evaluate_head",
    "extract_features",
    "feature_identity",
    "lr_factor",
    "open_feature_cache",
    "own_head_reference",
    "plan_models",
    "probe_rank",
    "rank_probe_table",
    "run_rank_probe",
    "split_windows",
    "train_head",
    "verify_split",
    "write_feature_cache",
]
