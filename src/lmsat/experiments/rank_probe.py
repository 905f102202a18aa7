"""Rank-constrained heads on frozen representations (SPEC 2.6 and 2.8; study Fig. 6, 8, 9).

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
W-error(r) of the model's own head (SPEC 2.8, Fig. 8).

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
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lmsat import __version__
from lmsat.training.schedule import warmup_cosine
from lmsat.errors import UserError
from lmsat.experiments.common import model_inputs, model_key
from lmsat.loading.corpus import CorpusSpec, check_corpus
from lmsat.loading.models import (
    LoadedModel,
    ModelSpec,
    get_hidden_size,
    is_causal_config,
    lm_head_weight,
    load_config,
    load_model,
    load_model_tokenizer,
    resolve_device,
)
from lmsat.loading.tokens import TokenSample, get_token_sample
from lmsat.measure.loss import chunked_cross_entropy
from lmsat.measure.spectrum import singular_values, w_error_curve
from lmsat.nn.heads import ProbeHead, make_head
from lmsat.progress import track
from lmsat.store import Record, Store, atomic_write_json, fingerprint

KIND = "rank_probe"
REF_KIND = "rank_probe_ref"
FEATURES_FORMAT = "lmsat.features/1"
FEATURE_DTYPES = ("float16", "float32")
FULL_RANK_HEADS = ("factorized", "plain")
DEFAULT_LR_GRID: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
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
    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID
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
        if not self.lr_grid:
            raise UserError("--lr-grid is empty; give learning rates such as 1e-3,3e-3,1e-2,3e-2.")
        bad = [lr for lr in self.lr_grid if not (math.isfinite(lr) and 0 < lr <= 1)]
        if bad:
            lo, hi = STUDY_LR_RANGE
            raise UserError(f"--lr-grid values must be in (0, 1] (got {bad}); the study searched [{lo:g}, {hi:g}].")
        if len(set(self.lr_grid)) != len(self.lr_grid):
            raise UserError(f"--lr-grid has repeated values ({list(self.lr_grid)}).")
        if self.steps < 1:
            raise UserError(f"--steps must be >= 1 (got {self.steps}).")
        if len(self.lr_grid) > 1 and self.search_steps < 1:
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
        if self.chunk_tokens < 0:
            raise UserError(f"--chunk-tokens must be >= 0 (0 = automatic; got {self.chunk_tokens}).")

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "lr_grid": list(self.lr_grid), "batch_seqs": self.batch_seqs}

    def results_hash(self) -> str:
        """Fingerprint of every setting that changes results (not batch sizes of the forward or of chunks)."""
        d = self.describe()
        for k in ("forward_batch", "chunk_tokens", "full_rank", "full_rank_head"):  # the last two: own record keys
            d.pop(k)
        return fingerprint(d)


def parse_ranks(text: str) -> list[int]:
    """``"8,16,32"`` -> [8, 16, 32] (sorted, unique); a clear error for anything else."""
    ranks = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            ranks.append(int(part))
        except ValueError:
            raise UserError(f"--ranks must be comma-separated integers such as 8,16,32,64 (got '{text}').") from None
    if not ranks:
        raise UserError("--ranks is empty; give ranks such as 8,16,32,64.")
    return sorted(set(ranks))


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in str(text).replace(" ", "").split(",") if p)
    except ValueError:
        raise UserError(f"{option} must be comma-separated numbers such as 1e-3,3e-3,1e-2 (got '{text}').") from None


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


# --- feature cache ----------------------------------------------------------------------------


@dataclass
class FeatureSplit:
    """Cached (representation, next token) pairs of one split, ``rows_per_seq`` consecutive rows per window."""

    name: str
    h: np.ndarray  # (rows, d) memmap, float16 or float32
    y: np.ndarray  # (rows,) memmap, int32
    rows_per_seq: int

    @property
    def n_seqs(self) -> int:
        return self.h.shape[0] // self.rows_per_seq

    @property
    def n_rows(self) -> int:
        return int(self.h.shape[0])

    def rows(self, seqs: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Representations (as stored: float16 or float32) and targets (int64) of the given windows, in order."""
        r = self.rows_per_seq
        h = np.concatenate([self.h[s * r : (s + 1) * r] for s in seqs])
        y = np.concatenate([self.y[s * r : (s + 1) * r] for s in seqs]).astype(np.int64)
        return h, y

    def tensors(self, seqs: Sequence[int] | np.ndarray, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`rows` on ``device``, representations in float32 (converted there: half the transfer)."""
        h, y = self.rows(seqs)
        return torch.from_numpy(h).to(device).float(), torch.from_numpy(y).to(device)


@dataclass
class FeatureCache:
    """An opened, verified feature cache (see the module docstring)."""

    folder: Path
    meta: dict[str, Any]
    train: FeatureSplit
    eval: FeatureSplit

    @property
    def hash(self) -> str:
        return self.folder.name

    @property
    def hidden_size(self) -> int:
        return int(self.meta["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def feature_rms(self) -> float:
        """sqrt(mean over training rows and coordinates of h^2): the scale heads are initialised for."""
        return float(self.meta["feature_rms"])


def _block_digest(h: np.ndarray, y: np.ndarray) -> str:
    d = hashlib.sha256(np.ascontiguousarray(h).tobytes())
    d.update(np.ascontiguousarray(y).tobytes())
    return d.hexdigest()


def _open_arrays(folder: Path, name: str, rows: int, d: int, dtype: str, mode: str) -> tuple[np.ndarray, np.ndarray]:
    from numpy.lib.format import open_memmap

    hp, yp = folder / f"{name}_h.npy", folder / f"{name}_y.npy"
    if mode == "w+":
        return (
            open_memmap(hp, mode="w+", dtype=np.dtype(dtype), shape=(rows, d)),
            open_memmap(yp, mode="w+", dtype=np.int32, shape=(rows,)),
        )
    return np.load(hp, mmap_mode=mode), np.load(yp, mmap_mode=mode)


def verify_split(split: FeatureSplit, block_rows: int, digests: list[str], folder: Path) -> None:
    """Recompute every block's sha256; a mismatch is a corrupt cache (a clear error naming the folder)."""
    starts = range(0, split.n_rows, block_rows)
    if len(digests) != len(starts):
        raise UserError(f"feature cache '{folder}' is incomplete ({split.name}); delete that folder and re-run.")
    for i, start in enumerate(track(starts, f"verify {split.name} features")):
        if _block_digest(split.h[start : start + block_rows], split.y[start : start + block_rows]) != digests[i]:
            raise UserError(
                f"feature cache '{folder}' is corrupt ({split.name} block {i} fails its sha256 check); delete that folder and re-run."
            )


def open_feature_cache(folder: str | Path, verify: bool = True) -> FeatureCache:
    """Open a finished cache (``meta.json`` present), checking every block's sha256 unless ``verify=False``."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"'{folder}' is not a finished feature cache (no meta.json); re-run to build it.")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FEATURES_FORMAT:
        raise UserError(f"feature cache '{folder}' has format {meta.get('format')!r}, not {FEATURES_FORMAT}; delete it and re-run.")
    splits = {}
    for name in ("train", "eval"):
        info = meta["splits"][name]
        try:
            h, y = _open_arrays(folder, name, info["rows"], meta["hidden_size"], meta["feature_dtype"], "r")
        except (OSError, ValueError) as exc:
            raise UserError(f"feature cache '{folder}' cannot be read ({exc}); delete that folder and re-run.") from exc
        if h.shape != (info["rows"], meta["hidden_size"]) or y.shape != (info["rows"],):
            raise UserError(f"feature cache '{folder}' has arrays of the wrong shape; delete that folder and re-run.")
        split = FeatureSplit(name, h, y, meta["rows_per_seq"])
        if verify:
            verify_split(split, meta["block_rows"], info["block_sha256"], folder)
        splits[name] = split
    return FeatureCache(folder=folder, meta=meta, train=splits["train"], eval=splits["eval"])


@dataclass
class _Progress:
    """What an extraction has finished, per split: one entry per block (sha256 and sums)."""

    blocks: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"train": [], "eval": []})


def write_feature_cache(
    folder: str | Path,
    identity: dict[str, Any],
    splits: dict[str, int],
    hidden_size: int,
    vocab_size: int,
    rows_per_seq: int,
    block_seqs: int,
    blocks: Any,
    feature_dtype: str = "float16",
) -> FeatureCache:
    """Fill a cache from a block producer, resuming after the blocks ``progress.json`` lists.

    ``splits``: {"train": n_seqs, "eval": n_seqs}. ``blocks(split, first_seq, n_seqs)``
    returns (h (n_seqs * rows_per_seq, d) float, y (same rows,) int, own-head
    cross-entropy sum or None, own-head top-1 correct count or None) for those windows.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    progress_path = folder / "progress.json"
    progress = _Progress()
    if progress_path.is_file():
        saved = json.loads(progress_path.read_text())
        if saved.get("identity_hash") == fingerprint(identity) and saved.get("block_seqs") == block_seqs:
            progress.blocks = saved["blocks"]
    block_rows = block_seqs * rows_per_seq
    for name in ("train", "eval"):
        n_seqs = splits[name]
        rows = n_seqs * rows_per_seq
        done = progress.blocks[name]
        mode = "r+" if done and (folder / f"{name}_h.npy").is_file() else "w+"
        if mode == "w+":
            done.clear()
        h_mm, y_mm = _open_arrays(folder, name, rows, hidden_size, feature_dtype, mode)
        if mode == "r+":  # re-check what an earlier, interrupted run wrote before building on it
            for i, entry in enumerate(done):
                s = i * block_rows
                if _block_digest(h_mm[s : s + block_rows], y_mm[s : s + block_rows]) != entry["sha256"]:
                    del done[i:]
                    break
        first_blocks = range(len(done) * block_seqs, n_seqs, block_seqs)
        for first in track(first_blocks, f"features ({name})"):
            n = min(block_seqs, n_seqs - first)
            h, y, own_sum, own_correct = blocks(name, first, n)
            h = np.asarray(h)
            if feature_dtype == "float16" and np.abs(h).max(initial=0.0) > _FLOAT16_MAX:
                raise UserError(
                    "the model's representations exceed the float16 range; re-run with --feature-dtype float32."
                )
            s = first * rows_per_seq
            h_mm[s : s + len(y)] = h
            y_mm[s : s + len(y)] = y
            h_mm.flush()
            y_mm.flush()
            stored_h = h_mm[s : s + len(y)]
            done.append(
                {
                    "sha256": _block_digest(stored_h, y_mm[s : s + len(y)]),
                    "sumsq": float(np.square(stored_h, dtype=np.float64).sum()),
                    "own_loss_sum": own_sum,
                    "own_correct": own_correct,
                    "rows": int(len(y)),
                }
            )
            atomic_write_json(
                progress_path,
                {"identity_hash": fingerprint(identity), "block_seqs": block_seqs, "blocks": progress.blocks},
            )
        del h_mm, y_mm
    meta = {
        "format": FEATURES_FORMAT,
        "identity": identity,
        "hidden_size": hidden_size,
        "vocab_size": vocab_size,
        "rows_per_seq": rows_per_seq,
        "block_seqs": block_seqs,
        "block_rows": block_rows,
        "feature_dtype": feature_dtype,
        "feature_rms": math.sqrt(
            sum(b["sumsq"] for b in progress.blocks["train"]) / (splits["train"] * rows_per_seq * hidden_size)
        ),
        "splits": {},
        "lmsat_version": __version__,
    }
    for name in ("train", "eval"):
        blocks_done = progress.blocks[name]
        own = None
        if blocks_done and all(b["own_loss_sum"] is not None for b in blocks_done):
            own = {
                "loss_sum": sum(b["own_loss_sum"] for b in blocks_done),
                "correct": sum(b["own_correct"] for b in blocks_done),
                "n": sum(b["rows"] for b in blocks_done),
            }
        meta["splits"][name] = {
            "n_seqs": splits[name],
            "rows": splits[name] * rows_per_seq,
            "block_sha256": [b["sha256"] for b in blocks_done],
            "own_head": own,
        }
    atomic_write_json(folder / "meta.json", meta)
    progress_path.unlink(missing_ok=True)
    return open_feature_cache(folder, verify=False)


def extract_features(
    loaded: LoadedModel,
    windows: dict[str, np.ndarray],
    folder: str | Path,
    identity: dict[str, Any],
    feature_dtype: str = "float16",
    block_seqs: int = 8,
) -> FeatureCache:
    """Forward each window once; cache the LM head's input at every position and the next token.

    The representations are captured by a forward pre-hook on the model's output
    embedding, so they are exactly what its head receives (after the final norm).
    The model's own cross-entropy on the same pairs comes from the same forward's logits.
    """
    model = loaded.model
    weight, _ = lm_head_weight(model)
    head_module = model.get_output_embeddings()
    captured: dict[str, torch.Tensor] = {}
    handle = head_module.register_forward_pre_hook(lambda _m, args: captured.__setitem__("h", args[0]))

    def blocks(split: str, first: int, n: int) -> tuple[np.ndarray, np.ndarray, float, int]:
        ids = torch.from_numpy(np.ascontiguousarray(windows[split][first : first + n])).to(loaded.device)
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=False)
            if "h" not in captured:
                raise UserError(
                    f"{type(model).__name__} computed its logits without calling its output embedding module, "
                    "so lmsat cannot capture what its head sees; rank-probe supports standard HF causal LMs."
                )
            h = captured.pop("h")[:, :-1].float()
            logits = out.logits[:, :-1].float()
            y = ids[:, 1:]
            loss_sum = float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            correct = int((logits.argmax(-1) == y).sum())
        return h.reshape(-1, h.shape[-1]).cpu().numpy(), y.reshape(-1).cpu().numpy().astype(np.int32), loss_sum, correct

    try:
        return write_feature_cache(
            folder,
            identity,
            {name: len(w) for name, w in windows.items()},
            hidden_size=int(weight.shape[1]),
            vocab_size=int(weight.shape[0]),
            rows_per_seq=int(windows["train"].shape[1]) - 1,
            block_seqs=block_seqs,
            blocks=blocks,
            feature_dtype=feature_dtype,
        )
    finally:
        handle.remove()


# --- training and evaluation ------------------------------------------------------------------


def lr_factor(step: int, steps: int, warmup_frac: float, min_lr_frac: float) -> float:
    """Learning-rate multiplier at update ``step`` (0-based) of ``steps``: :func:`warmup_cosine`
    with a warm-up of ceil(warmup_frac * steps) updates, decaying to ``min_lr_frac``."""
    return warmup_cosine(step, steps, math.ceil(warmup_frac * steps), min_lr_frac)


def chunk_rows(vocab_size: int, device: str, chunk_tokens: int = 0) -> int:
    """Tokens per logits chunk: ``chunk_tokens``, or (0) AUTO_CHUNK_LOGITS[device] / V, at least AUTO_MIN_CHUNK_TOKENS."""
    if chunk_tokens > 0:
        return chunk_tokens
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return max(AUTO_MIN_CHUNK_TOKENS[kind], AUTO_CHUNK_LOGITS[kind] // vocab_size)


def _batches(seqs: np.ndarray, batch_seqs: int, seed: int) -> Iterator[np.ndarray]:
    """Endless batches of windows: seeded random order, reshuffled every epoch."""
    rng = np.random.default_rng([seed, 3])
    pool: list[int] = []
    while True:
        if len(pool) < batch_seqs:
            pool.extend(rng.permutation(seqs).tolist())
        batch, pool = pool[:batch_seqs], pool[batch_seqs:]
        yield np.asarray(batch)


def _autocast(device: str) -> Any:
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@dataclass
class TrainResult:
    train_loss: float  # mean loss of the last max(1, steps // 10) batches, nats/token
    steps: int
    tokens_seen: int
    seconds: float
    diverged: bool


def train_head(
    head: ProbeHead,
    split: FeatureSplit,
    seqs: np.ndarray,
    steps: int,
    lr: float,
    settings: ProbeSettings,
    device: str,
    seed: int = 0,
    description: str = "train",
) -> TrainResult:
    """Train ``head`` on windows ``seqs`` of ``split``: AdamW (beta 0.9, 0.95), warm-up + cosine.

    Each batch is split into chunks of :func:`chunk_rows` tokens whose gradients
    accumulate, so at most one chunk of (tokens x V) logits exists at a time.
    Stops early (``diverged``) if the loss becomes NaN or infinite.
    """
    head.to(device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps, settings.warmup_frac, settings.min_lr_frac)
    )
    chunk = chunk_rows(head.vocab_size, device, settings.chunk_tokens)
    batches = _batches(np.asarray(seqs), min(settings.batch_seqs, len(seqs)), seed)
    tail = max(1, steps // 10)
    losses: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    diverged = False
    for _ in track(range(steps), description):
        h, y = split.tensors(next(batches), device)
        n = len(y)
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for start in range(0, n, chunk):
            with _autocast(device):
                loss, _ = head.nll(h[start : start + chunk], y[start : start + chunk])
            (loss / n).backward()
            total += loss.detach()
        value = float(total) / n
        if not math.isfinite(value):
            diverged = True
            break
        losses.append(value)
        opt.step()
        sched.step()
        tokens += n
    head.eval()
    train_loss = float(np.mean(losses[-tail:])) if losses and not diverged else float("inf")
    return TrainResult(train_loss, len(losses), tokens, time.perf_counter() - t0, diverged)


@torch.no_grad()
def evaluate_head(
    head: ProbeHead, split: FeatureSplit, seqs: np.ndarray, device: str, chunk_tokens: int = 0
) -> dict[str, Any]:
    """Held-out loss (nats/token), its standard error, perplexity exp(loss) and top-1 accuracy on windows ``seqs``.

    ``nll``: the per-token -ln p(y_t | h_t) (float32), kept for paired comparisons
    between heads evaluated on the same tokens; ``loss_se`` = std(nll) / sqrt(n).
    """
    head.to(device).eval()
    chunk = chunk_rows(head.vocab_size, device, chunk_tokens)
    per_block = max(1, _EVAL_ROWS // split.rows_per_seq)
    parts: list[np.ndarray] = []
    correct = 0
    for first in range(0, len(seqs), per_block):
        h, y = split.tensors(seqs[first : first + per_block], device)
        for start in range(0, len(y), chunk):
            nll, hit = head.token_nll(h[start : start + chunk], y[start : start + chunk])
            parts.append(nll.float().cpu().numpy())
            correct += int(hit.sum())
    nll_all = np.concatenate(parts)
    n = len(nll_all)
    loss = float(nll_all.astype(np.float64).mean())
    return {
        "loss": loss,
        "loss_se": float(nll_all.std(dtype=np.float64) / math.sqrt(n)),
        "perplexity": math.exp(min(loss, 700.0)),
        "accuracy": correct / n,
        "n_tokens": n,
        "nll": nll_all,
    }


# --- one rank: search, then the full budget ---------------------------------------------------


def _run_key(prefix: str, rank_label: str, lr: float, stage: str) -> str:
    return f"{prefix}|{rank_label}|lr={lr:g}|{stage}"


def probe_rank(
    store: Store,
    cache: FeatureCache,
    prefix: str,
    rank: int | None,
    settings: ProbeSettings,
    inputs: dict[str, Any],
    device: str,
    w_error: np.ndarray | None = None,
) -> Record:
    """Learning-rate search then full-budget training of one head; every finished run is a record.

    ``rank=None`` trains the full-rank reference head (kind ``rank_probe_ref``): with
    ``settings.full_rank_head == "factorized"`` the probe's own W = A B at
    r = min(V, d) (key ``<model>|full|...``), with "plain" a single V x d matrix
    (key ``<model>|full-plain|...``). Runs whose record exists are read back, not repeated.
    """
    kind = KIND if rank is not None else REF_KIND
    head_kind = "low-rank" if rank is not None else "full-rank"
    plain = rank is None and settings.full_rank_head == "plain"
    rank_label = f"r={rank}" if rank is not None else ("full-plain" if plain else "full")
    V, d = cache.vocab_size, cache.hidden_size
    true_rank = rank if rank is not None else min(V, d)
    parametrization = "W" if plain else "A B"
    head_seed = int(fingerprint([settings.seed, head_kind, true_rank])[:8], 16)
    base_inputs = {**inputs, "head": head_kind, "rank": true_rank, "parametrization": parametrization, "features": cache.hash}

    def new_head() -> ProbeHead:
        if plain:
            return make_head("full-rank", V, d, None, cache.feature_rms, seed=head_seed)
        return make_head("low-rank", V, d, true_rank, cache.feature_rms, seed=head_seed)

    all_train = np.arange(cache.train.n_seqs)
    search: dict[str, float | None] = {}
    if len(settings.lr_grid) > 1:
        fit_seqs, dev_seqs = dev_windows(cache.train.n_seqs, settings.dev_frac, settings.seed)
        for lr in settings.lr_grid:
            key = _run_key(prefix, rank_label, lr, "search")
            rec = store.get(kind, key)
            if rec is None:
                head = new_head()
                tr = train_head(head, cache.train, fit_seqs, settings.search_steps, lr, settings, device, seed=head_seed,
                                description=f"search {rank_label} lr={lr:g}")
                dev = evaluate_head(head, cache.train, dev_seqs, device, settings.chunk_tokens) if not tr.diverged else None
                results = {
                    "stage": "search",
                    "lr": lr,
                    "dev_loss": dev["loss"] if dev else None,
                    "dev_accuracy": dev["accuracy"] if dev else None,
                    "dev_tokens": dev["n_tokens"] if dev else None,
                    "train_loss": tr.train_loss,
                    "diverged": tr.diverged,
                    "steps": tr.steps,
                    "tokens_seen": tr.tokens_seen,
                    "seconds": tr.seconds,
                }
                rec = store.put(kind, key, {**base_inputs, "lr": lr, "stage": "search"}, results)
                del head
            search[f"{lr:g}"] = rec.results.get("dev_loss")
        finite = {lr: search[f"{lr:g}"] for lr in settings.lr_grid if search[f"{lr:g}"] is not None}
        if not finite:
            raise UserError(
                f"every learning rate of --lr-grid diverged for {rank_label}; try smaller rates."
            )
        best_lr = min(finite, key=lambda lr: (finite[lr], lr))
    else:
        best_lr = settings.lr_grid[0]
    key = _run_key(prefix, rank_label, best_lr, "final")
    rec = store.get(kind, key)
    if rec is not None:
        return rec
    head = new_head()
    tr = train_head(head, cache.train, all_train, settings.steps, best_lr, settings, device, seed=head_seed,
                    description=f"train {rank_label} lr={best_lr:g}")
    if tr.diverged:
        ev = {"loss": None, "loss_se": None, "perplexity": None, "accuracy": None, "n_tokens": None, "nll": None}
    else:
        ev = evaluate_head(head, cache.eval, np.arange(cache.eval.n_seqs), device, settings.chunk_tokens)
    results = {
        "stage": "final",
        "head": head_kind,
        "parametrization": parametrization,
        "rank": true_rank,
        "lr": best_lr,
        "loss": ev["loss"],
        "loss_se": ev["loss_se"],
        "perplexity": ev["perplexity"],
        "accuracy": ev["accuracy"],
        "eval_tokens": ev["n_tokens"],
        "w_error": float(w_error[true_rank]) if w_error is not None and true_rank < len(w_error) else None,
        "search_dev_loss": search,
        "train_loss": tr.train_loss,
        "diverged": tr.diverged,
        "steps": tr.steps,
        "tokens_seen": tr.tokens_seen,
        "seconds": tr.seconds,
        "train_tokens_per_s": tr.tokens_seen / tr.seconds if tr.seconds > 0 else None,
        "n_parameters": head.n_parameters(),
    }
    arrays = {"eval_nll": ev["nll"]} if ev["nll"] is not None else None
    return store.put(kind, key, {**base_inputs, "lr": best_lr, "stage": "final"}, results, arrays=arrays)


# --- the whole measurement for a list of models -----------------------------------------------


@dataclass
class _Plan:
    spec: ModelSpec
    key: str
    config: Any
    hidden_size: int
    vocab_size: int


def _vocab_size(config: Any) -> int:
    for cfg in (config, getattr(config, "text_config", None)):
        v = getattr(cfg, "vocab_size", None) if cfg is not None else None
        if isinstance(v, int):
            return v
    raise UserError(f"cannot find the vocabulary size in the config of {type(config).__name__}.")


def plan_models(specs: list[ModelSpec], ranks: list[int] | None) -> list[_Plan]:
    """Load each config and check every rank against it (nothing is written)."""
    plans = []
    for spec in specs:
        config = load_config(spec)
        if not is_causal_config(config):
            raise UserError(
                f"'{spec.name}' is a {config.model_type} model without a causal language-model head; "
                "rank-probe needs a causal LM (GPT-NeoX, Llama, GPT-2, OPT, ...)."
            )
        d, V = get_hidden_size(config), _vocab_size(config)
        for r in ranks or []:
            if not 1 <= r <= min(V, d):
                raise UserError(
                    f"--ranks {r} is outside [1, {min(V, d)}] for {spec.label} (hidden size d = {d}): "
                    f"a head W = A B with r > d has no more rank than d; choose ranks between 1 and {min(V, d)}."
                )
        plans.append(_Plan(spec, model_key(spec), config, d, V))
    return plans


def _model_records(store: Store, key: str) -> list[Record]:
    mine = lambda r: r.inputs.get("model_key") == key  # noqa: E731
    return store.records(KIND, mine) + store.records(REF_KIND, mine)


def check_resumable(store: Store, plans: list[_Plan], settings: ProbeSettings, force: bool) -> None:
    """Existing records of a model must come from the same settings (else: --force or another run dir)."""
    want = settings.results_hash()
    for plan in plans:
        other = [r for r in _model_records(store, plan.key) if r.inputs.get("settings_hash") != want]
        if other and not force:
            raise UserError(
                f"'{store.root}' holds rank-probe results for {plan.spec.label} made with other settings "
                f"(e.g. {other[0].key}); use another --output, the same settings, or --force to recompute them."
            )


def feature_identity(spec: ModelSpec, sample: TokenSample, settings: ProbeSettings) -> dict[str, Any]:
    """Everything the cached representations depend on (its fingerprint names the cache folder)."""
    return {
        "format": FEATURES_FORMAT,
        "model": spec.name,
        "revision": spec.revision,
        "gguf_file": spec.gguf_file,
        "dtype": spec.dtype,
        "token_sample": sample.hash,
        "n_eval_seqs": settings.n_eval_seqs,
        "split_seed": settings.seed,
        "feature_dtype": settings.feature_dtype,
    }


def own_head_reference(
    store: Store, cache: FeatureCache, loaded: LoadedModel, prefix: str, inputs: dict[str, Any], device: str
) -> Record:
    """The model's own head on the held-out pairs, and its singular values and W-error curve.

    ``loss`` is the model's own cross-entropy from its forward logits (recorded at
    extraction); ``loss_from_features`` applies the head matrix to the cached
    representations, a check that the cache holds exactly what the head sees
    (they differ by float16 rounding, or for heads that are not a plain linear map).
    """
    weight, info = lm_head_weight(loaded.model)
    bias = getattr(loaded.model.get_output_embeddings(), "bias", None)
    w = weight.detach().float().to(device)
    b = bias.detach().float().to(device) if bias is not None else None
    chunk = chunk_rows(int(w.shape[0]), device)
    seqs = np.arange(cache.eval.n_seqs)
    per_block = max(1, _EVAL_ROWS // cache.eval.rows_per_seq)
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for first in range(0, len(seqs), per_block):
            h, y = cache.eval.tensors(seqs[first : first + per_block], device)
            s, c = chunked_cross_entropy(h, w, y, bias=b, chunk_tokens=chunk)
            total, correct, n = total + float(s), correct + int(c), n + len(y)
    own = cache.meta["splits"]["eval"]["own_head"]
    s = singular_values(weight)
    curve = w_error_curve(s)
    loss = own["loss_sum"] / own["n"]
    results = {
        "head": "own",
        "rank": int(min(weight.shape)),
        "loss": loss,
        "perplexity": math.exp(loss),
        "accuracy": own["correct"] / own["n"],
        "eval_tokens": own["n"],
        "loss_from_features": total / n,
        "accuracy_from_features": correct / n,
        "head_info": info,
    }
    return store.put(REF_KIND, f"{prefix}|own-head", {**inputs, "head": "own", "features": cache.hash}, results,
                     arrays={"singular_values": s, "w_error": curve})


def run_rank_probe(
    specs: list[ModelSpec],
    corpus: CorpusSpec,
    output: str | Path,
    ranks: list[int] | None = None,
    settings: ProbeSettings | None = None,
    force: bool = False,
) -> list[Record]:
    """The rank probe of every model: features (cached), own-head and full-rank references, one head per rank.

    ``ranks=None`` uses :func:`default_ranks` of each model. Every input is checked
    before anything is written; finished runs are kept and skipped on a re-run.
    """
    settings = settings or ProbeSettings()
    settings.validate()
    plans = plan_models(specs, ranks)
    check_corpus(corpus)
    store = Store(output)
    check_resumable(store, plans, settings, force)
    out: list[Record] = []
    for plan in plans:
        if force:
            for rec in _model_records(store, plan.key):
                store.delete(rec.kind, rec.key)
        out.extend(_probe_model(store, plan, corpus, Path(output), ranks or default_ranks(plan.hidden_size), settings))
    return out


def _probe_model(
    store: Store, plan: _Plan, corpus: CorpusSpec, output: Path, ranks: list[int], settings: ProbeSettings
) -> list[Record]:
    spec = plan.spec
    device = resolve_device(spec.device)
    tokenizer = load_model_tokenizer(spec)
    n_seqs = settings.n_train_seqs + settings.n_eval_seqs
    sample = get_token_sample(output, corpus, tokenizer, n_seqs * settings.seq_len, settings.seq_len, settings.seed)
    train_idx, eval_idx = split_windows(sample.ids.shape[0], settings.n_eval_seqs, settings.seed)
    identity = feature_identity(spec, sample, settings)
    folder = output / "features" / fingerprint(identity)
    ref_key = f"{plan.key}|own-head"
    loaded: LoadedModel | None = None

    def model() -> LoadedModel:
        nonlocal loaded
        if loaded is None:
            loaded = load_model(spec, require_causal=True)
        return loaded

    if (folder / "meta.json").is_file():
        cache = open_feature_cache(folder)
    else:
        windows = {"train": sample.ids[train_idx], "eval": sample.ids[eval_idx]}
        cache = extract_features(model(), windows, folder, identity, settings.feature_dtype, settings.forward_batch)
    shell = LoadedModel(spec=spec, model=None, config=plan.config, device=device, is_causal=True)
    inputs = model_inputs(
        shell,
        sample,
        model_key=plan.key,
        vocab_size=cache.vocab_size,
        settings=settings.describe(),
        settings_hash=settings.results_hash(),
        train_windows=int(len(train_idx)),
        eval_windows=int(len(eval_idx)),
    )
    ref = store.get(REF_KIND, ref_key)
    if ref is None:
        ref = own_head_reference(store, cache, model(), plan.key, inputs, device)
    loaded = None  # the probes need only the cached representations
    w_err = ref.load_arrays()["w_error"]
    records = [ref]
    if settings.full_rank:
        records.append(probe_rank(store, cache, plan.key, None, settings, inputs, device, w_err))
    for r in ranks:
        records.append(probe_rank(store, cache, plan.key, r, settings, inputs, device, w_err))
    return records


# --- derived table ----------------------------------------------------------------------------


def rank_probe_table(store: Store) -> pd.DataFrame:
    """One row per model and head (final runs and references), read from the records.

    Columns: model (record key of the model), revision, gguf_file, head (low-rank / full-rank / own),
    parametrization ("A B" or "W"), rank, lr, loss (nats/token), loss_se (its standard error over the held-out tokens), perplexity,
    accuracy, w_error (of the model's own head at that rank), tokens_seen, eval_tokens, settings_hash.
    """
    rows = []
    for kind in (REF_KIND, KIND):
        for rec in store.records(kind, lambda r: r.results.get("stage") == "final" or r.results.get("head") == "own"):
            res = rec.results
            rows.append(
                {
                    "model": rec.inputs.get("model_key"),
                    "revision": rec.inputs.get("revision"),
                    "gguf_file": rec.inputs.get("gguf_file"),
                    "head": res.get("head"),
                    "parametrization": res.get("parametrization", "W" if res.get("head") == "own" else None),
                    "rank": res.get("rank"),
                    "lr": res.get("lr"),
                    "loss": res.get("loss"),
                    "loss_se": res.get("loss_se"),
                    "perplexity": res.get("perplexity"),
                    "accuracy": res.get("accuracy"),
                    "w_error": res.get("w_error") if res.get("head") != "own" else 0.0,
                    "tokens_seen": res.get("tokens_seen"),
                    "eval_tokens": res.get("eval_tokens"),
                    "settings_hash": rec.inputs.get("settings_hash"),
                }
            )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for col in ("rank", "tokens_seen", "eval_tokens"):
        frame[col] = frame[col].astype("Int64")
    order = {"low-rank": 0, "full-rank": 1, "own": 2}
    frame["_o"] = frame["head"].map(order)
    return frame.sort_values(["model", "_o", "rank", "parametrization"]).drop(columns="_o").reset_index(drop=True)
