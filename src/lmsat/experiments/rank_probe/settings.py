"""Settings of a rank probe (the options of ``lmsat rank-probe``) and the split of its token windows."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lmsat.errors import UserError
from lmsat.nn.beyond import INITS, HeadSpec
from lmsat.store import fingerprint

KIND = "rank_probe"
REF_KIND = "rank_probe_ref"
FEATURES_FORMAT = "lmsat.features/1"
FEATURE_DTYPES = ("float16", "float32")
FULL_RANK_HEADS = ("factorized", "plain")
DEFAULT_LR_GRID: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
# --init svd starts at the own head's factors, whose entries are small (SmolLM2: rms 0.02 in A):
# AdamW moves every entry by about the rate per step, so 1e-3 wrecks the truncation in 10 steps
# (SmolLM2, r = d: dev loss 4.0 -> 6.1). The untrained truncation (rate 0) is a candidate too.
SVD_LR_GRID: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4)
STUDY_LR_RANGE = (1e-3, 5e-2)
# Logit elements per chunk when --chunk-tokens is 0: 64 MB of float32 logits on CPU, 512 MB on CUDA;
# never fewer tokens than AUTO_MIN_CHUNK_TOKENS (on 2 threads, steps in chunks of 256 tokens ran up
# to 2x slower than in chunks of 1024; on 1 thread the chunk size made no difference).
AUTO_CHUNK_LOGITS = {"cpu": 1 << 24, "cuda": 1 << 27}
AUTO_MIN_CHUNK_TOKENS = {"cpu": 256, "cuda": 1024}
_EVAL_ROWS = 1 << 15
_FLOAT16_MAX = float(np.finfo(np.float16).max)



# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSettings:
    """Budget and recipe of a rank probe (the CLI options of ``lmsat rank-probe``).

    Token counts are rounded up to whole windows of ``seq_len`` tokens; a window
    gives ``seq_len - 1`` training pairs. A batch is ``batch_tokens / (seq_len - 1)``
    whole windows (rounded, at least one), as the study batches whole sequences.
    Training cycles over the training windows in seeded random order when
    ``steps`` x batch exceeds them (epochs).
    """

    train_tokens: int = 24576
    eval_tokens: int = 2048
    seq_len: int = 128
    seed: int = 0
    lr_grid: tuple[float, ...] = ()  # () = automatic: DEFAULT_LR_GRID (gaussian) or SVD_LR_GRID (svd)
    search_steps: int = 10
    steps: int = 90
    batch_tokens: int = 256
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1
    weight_decay: float = 0.01
    dev_frac: float = 0.1
    feature_dtype: str = "float16"
    forward_batch: int = 8
    chunk_tokens: int = 0
    full_rank: bool = True
    full_rank_head: str = "factorized"
    head: str = "softmax"
    init: str = "svd"

    @property
    def n_train_seqs(self) -> int:
        return math.ceil(self.train_tokens / self.seq_len)

    @property
    def n_eval_seqs(self) -> int:
        return math.ceil(self.eval_tokens / self.seq_len)

    @property
    def batch_seqs(self) -> int:
        return max(1, round(self.batch_tokens / (self.seq_len - 1)))

    def validate(self) -> None:
        """Raise :class:`UserError` on any setting the user must change (before anything is written)."""
        if self.seq_len < 2:
            raise UserError(f"--seq-len must be >= 2 (got {self.seq_len}).")
        if self.train_tokens < 2 * self.seq_len:
            raise UserError(
                f"--train-tokens {self.train_tokens} gives fewer than 2 windows of --seq-len {self.seq_len}; "
                "the learning-rate search needs a development slice: raise --train-tokens."
            )
        if self.eval_tokens < 1:
            raise UserError(f"--eval-tokens must be >= 1 (got {self.eval_tokens}).")
        bad = [lr for lr in self.lr_grid if not (math.isfinite(lr) and 0 < lr <= 1)]
        if bad:
            lo, hi = STUDY_LR_RANGE
            raise UserError(f"--lr-grid values must be in (0, 1] (got {bad}); the study searched [{lo:g}, {hi:g}].")
        if len(set(self.lr_grid)) != len(self.lr_grid):
            raise UserError(f"--lr-grid has repeated values ({list(self.lr_grid)}).")
        if self.steps < 1:
            raise UserError(f"--steps must be >= 1 (got {self.steps}).")
        if len(self.rates) > 1 and self.search_steps < 1:
            raise UserError(f"--search-steps must be >= 1 when --lr-grid has several rates (got {self.search_steps}).")
        if self.batch_tokens < 1:
            raise UserError(f"--batch-tokens must be >= 1 (got {self.batch_tokens}).")
        if not 0 <= self.warmup_frac < 1:
            raise UserError(f"--warmup must be a fraction in [0, 1) (got {self.warmup_frac}).")
        if not 0 <= self.min_lr_frac <= 1:
            raise UserError(f"the final learning-rate fraction must be in [0, 1] (got {self.min_lr_frac}).")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0 (got {self.weight_decay}).")
        if not 0 < self.dev_frac < 1:
            raise UserError(f"the development fraction must be in (0, 1) (got {self.dev_frac}).")
        if self.feature_dtype not in FEATURE_DTYPES:
            raise UserError(f"--feature-dtype must be one of {', '.join(FEATURE_DTYPES)} (got '{self.feature_dtype}').")
        if self.forward_batch < 1:
            raise UserError(f"--batch-size must be >= 1 (got {self.forward_batch}).")
        if self.full_rank_head not in FULL_RANK_HEADS:
            raise UserError(f"--full-rank-head must be one of {', '.join(FULL_RANK_HEADS)} (got '{self.full_rank_head}').")
        HeadSpec.parse(self.head)
        if self.init not in INITS:
            raise UserError(f"--init must be one of {', '.join(INITS)} (got '{self.init}').")
        if self.chunk_tokens < 0:
            raise UserError(f"--chunk-tokens must be >= 0 (0 = automatic; got {self.chunk_tokens}).")

    @property
    def rates(self) -> tuple[float, ...]:
        """The learning rates searched: ``lr_grid``, or the automatic grid of the initialisation."""
        return self.lr_grid or (SVD_LR_GRID if self.init == "svd" else DEFAULT_LR_GRID)

    @property
    def keeps_untrained(self) -> bool:
        """Whether the untrained head (rate 0: for --init svd, the truncation itself) is a candidate of the search."""
        return self.init == "svd"

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "lr_grid": list(self.rates), "batch_seqs": self.batch_seqs}

    def results_hash(self) -> str:
        """Fingerprint of every setting that changes results (not batch sizes of the forward or of chunks)."""
        d = self.describe()
        for k in ("forward_batch", "chunk_tokens", "full_rank", "full_rank_head", "head", "init"):  # the last four: in record keys
            d.pop(k)
        return fingerprint(d)


def default_ranks(hidden_size: int, start: int = 8) -> list[int]:
    """Powers of two from ``start`` below d (the full-rank reference row covers r = d)."""
    ranks, r = [], start
    while r < hidden_size:
        ranks.append(r)
        r *= 2
    return ranks or [hidden_size]


# --- token windows ----------------------------------------------------------------------------


def split_windows(n_windows: int, n_eval: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training window indices, held-out window indices), both sorted, disjoint, covering 0..n-1.

    The held-out windows are the first ``n_eval`` of a permutation drawn with
    ``numpy.random.default_rng([seed, 1])``.
    """
    if not 1 <= n_eval < n_windows:
        raise ValueError(f"need 1 <= n_eval < n_windows, got {n_eval} and {n_windows}")
    perm = np.random.default_rng([seed, 1]).permutation(n_windows)
    return np.sort(perm[n_eval:]), np.sort(perm[:n_eval])


def dev_windows(n_train: int, dev_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(search-training indices, development indices) into the training windows, for the learning-rate search."""
    n_dev = min(n_train - 1, max(1, round(dev_frac * n_train)))
    perm = np.random.default_rng([seed, 2]).permutation(n_train)
    return np.sort(perm[n_dev:]), np.sort(perm[:n_dev])

