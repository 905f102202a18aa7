"""The feature cache: the LM head's inputs and next tokens of a token sample, memory-mapped and checksummed.

Layout and resume rules: see :mod:`lmsat.experiments.rank_probe`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmsat import __version__
from lmsat.errors import UserError
from lmsat.experiments.rank_probe.settings import (
    _FLOAT16_MAX,
    FEATURES_FORMAT,
    ProbeSettings,
)
from lmsat.loading.models import (
    LoadedModel,
    ModelSpec,
    lm_head_weight,
)
from lmsat.loading.tokens import TokenSample
from lmsat.nn.head_inputs import capture_head_inputs, head_inputs_forward
from lmsat.progress import track
from lmsat.store import atomic_write_json, fingerprint

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
    for i, start in enumerate(track(starts, f"verify {split.name} features", unit="blocks")):
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
        for first in track(first_blocks, f"features ({name})", unit="blocks"):
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

    The representations come from the one head-inputs pass (:mod:`lmsat.nn.head_inputs`: a forward
    pre-hook on the model's output embedding), so they are exactly what its head receives.
    The model's own cross-entropy on the same pairs comes from the same forward's logits.
    """
    model = loaded.model
    weight, _ = lm_head_weight(model)

    def blocks(split: str, first: int, n: int) -> tuple[np.ndarray, np.ndarray, float, int]:
        ids = torch.from_numpy(np.ascontiguousarray(windows[split][first : first + n])).to(loaded.device)
        with torch.inference_mode():
            h, out = head_inputs_forward(model, ids, captured)
            h = h[:, :-1].float()
            logits = out.logits[:, :-1].float()
            y = ids[:, 1:]
            loss_sum = float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            correct = int((logits.argmax(-1) == y).sum())
        return h.reshape(-1, h.shape[-1]).cpu().numpy(), y.reshape(-1).cpu().numpy().astype(np.int32), loss_sum, correct

    with capture_head_inputs(model) as captured:
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

