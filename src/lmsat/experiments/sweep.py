"""Checkpoint sweeps: loss, anisotropy and head spectrum of every checkpoint (docs/methods.md §5, §1, §3).

For each (model, revision) pair one record of kind ``sweep`` with key
``<model>@<revision>`` (see :func:`run_sweep`), measured on one token sample
per tokenizer (``--tokens``, 50,000 by default as in the study):

* ``cross_entropy``: mean next-token cross-entropy, nats/token;
* ``last_layer_anisotropy``: mean cosine similarity of the last hidden states
  (``layers``: every layer, when asked);
* ``singular_values`` (array) of the LM head W (V x d), ``singular_entropy``
  KL(p || uniform) with p = s^2 / sum s^2 (and ``singular_entropy_linear``
  with p = s / sum s), ``effective_rank`` exp(H(p));
* ``weights_hash`` (sha256 of every tensor: name, dtype, shape, bytes) and
  ``head_hash``; ``duplicate_of`` names the lowest-step record with equal weights
  (published Pythia branches have served the wrong weights; :func:`write_record`);
* ``wall_time_s``: seconds spent loading (and hashing) plus measuring it.

Nothing is lost: each record is written atomically once its checkpoint is
done; a re-run skips every stored key, so a kill at any point loses at most
the checkpoint in progress. A checkpoint that fails to load, or whose loss or
head is not finite, gets a record with ``status: "failed"`` and its ``error``;
``retry_failed`` measures those again. While one checkpoint is measured the
next one is loaded in a background thread (``prefetch``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from lmsat import __version__
from lmsat.errors import UserError
from lmsat.experiments.common import still_current
from lmsat.kinds.sweep import SweepRecord
from lmsat.loading.checkpoints import (
    Checkpoint,
    SweepModel,
    evict_hub_commit,
    find_tokenizer_folder,
    has_weights,
    hub_cached_commits,
    hub_commit_of,
)
from lmsat.loading.corpus import CorpusSpec, check_corpus
from lmsat.loading.models import (
    LoadedModel,
    ModelSpec,
    load_config,
    lm_head_weight,
    load_model,
    resolve_device,
    torch_dtype,
    weights_fingerprint,
)
from lmsat.loading.tokenizers import TextTokenizer, load_tokenizer
from lmsat.loading.tokens import TokenSample, get_token_sample
from lmsat.progress import track
from lmsat.store import Record, Store

KIND = "sweep"
DEFAULT_TOKENS = 50_000
MAX_AUTO_SEQ_LEN = 2048
LAYER_CHOICES = ("last", "all")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class SweepSettings:
    """How every checkpoint is measured (the same for the whole run directory)."""

    n_tokens: int = DEFAULT_TOKENS
    seq_len: int | None = None  # None: the shortest context of the models, at most 2048
    seed: int = 0
    batch_size: int = 8
    dtype: str = "float32"
    device: str = "auto"
    layers: str = "last"
    prefetch: bool = True
    retry_failed: bool = False
    keep_downloads: bool = False
    trust_remote_code: bool = False
    tokenizer: str | None = None


@dataclass
class SweepSummary:
    """What one call of :func:`run_sweep` did."""

    total: int = 0
    skipped: int = 0
    measured: int = 0
    failed: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def checkpoints_per_minute(self) -> float:
        return 60.0 * self.measured / self.wall_time_s if self.wall_time_s > 0 else float("nan")


@dataclass
class SweepPlan:
    """A validated sweep: models, resolved device and sequence length, tokenizers per model."""

    models: list[SweepModel]
    device: str
    seq_len: int
    tokenizers: dict[str, TextTokenizer]  # model name -> tokenizer
    tokens_per_step: dict[str, int | None]
    n_params: dict[str, int | None]


@dataclass
class LoadedCheckpoint:
    """A checkpoint in memory with the facts known from its weights alone."""

    loaded: LoadedModel
    weights_hash: str
    head_hash: str
    n_params: int
    load_time_s: float


# --- pure pieces ----------------------------------------------------------------------------


def tensor_bytes(t: Any) -> memoryview:
    """The raw bytes of a tensor (any dtype, any device), as a memoryview of a CPU copy."""
    import torch

    c = t.detach().contiguous().cpu()
    return memoryview(c.view(torch.uint8).numpy()) if c.numel() else memoryview(b"")


def weights_hashes(model: Any) -> tuple[str, str]:
    """(hash of every tensor, hash of the LM head): sha256 hex of names, dtypes, shapes and bytes.

    Tensors shared under two names (a tied head) are hashed once, the alias by name.
    Two checkpoints have equal ``weights_hash`` exactly when every tensor is equal.
    """
    h = hashlib.sha256()
    seen: dict[tuple[int, tuple[int, ...], str], str] = {}
    for name, t in sorted(model.state_dict().items()):
        ident = (t.data_ptr(), tuple(t.shape), str(t.dtype))
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if ident in seen and t.numel():
            h.update(f"alias:{seen[ident]}".encode())
            continue
        seen[ident] = name
        h.update(tensor_bytes(t))
    weight, _ = lm_head_weight(model)
    hh = hashlib.sha256(f"{weight.dtype}|{tuple(weight.shape)}|".encode())
    hh.update(tensor_bytes(weight))
    return h.hexdigest(), hh.hexdigest()


def count_parameters(model: Any) -> int:
    """Number of distinct parameters (a tied head counted once)."""
    return int(sum(p.numel() for p in model.parameters()))


def measure_checkpoint(loaded: LoadedModel, sample: TokenSample, batch_size: int, layers: str, description: str = "forward") -> tuple[dict[str, Any], np.ndarray]:
    """(results, singular values) of one loaded checkpoint; raises ValueError on a non-finite loss or head.

    One forward pass over ``sample`` gives the loss and the anisotropy
    (``experiments.representations.representation_pass``); the head spectrum comes
    from ``measure.spectrum.singular_values`` summarised by ``experiments.head.head_summary``.
    """
    from lmsat.experiments.head import head_summary
    from lmsat.experiments.representations import representation_pass
    from lmsat.measure.spectrum import singular_values

    result = representation_pass(loaded, sample, batch_size=batch_size, layers=layers, description=description)  # type: ignore[arg-type]
    ce = result.cross_entropy
    if not math.isfinite(ce):
        raise ValueError(f"the cross-entropy is not finite ({ce}): the weights hold NaN/inf or overflow in {loaded.spec.dtype}")
    weight, _ = lm_head_weight(loaded.model)
    s = singular_values(weight)
    if not np.all(np.isfinite(s)):
        raise ValueError("the LM head holds NaN/inf values")
    summary = head_summary(s)
    last = result.layers[-1]
    results: dict[str, Any] = {
        "cross_entropy": ce,
        "last_layer_anisotropy": last.anisotropy,
    }
    if layers == "all":
        results["layers"] = [asdict(x) for x in result.layers]
    results.update(
        {
            "singular_entropy": summary["singular_entropy"],
            "singular_entropy_linear": summary["singular_entropy_linear"],
            "effective_rank": summary["effective_rank"],
            "hidden_size": int(weight.shape[1]),
        }
    )
    return results, s


def error_text(exc: BaseException) -> str:
    """One line for a failed record: the UserError message, or ``Type: message``."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, UserError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:500]


# --- background loading ----------------------------------------------------------------------


class _Now(Generic[R]):
    """A 'future' computed when asked (the sequential, no-prefetch path)."""

    def __init__(self, fn: Callable[[], R]) -> None:
        self._fn = fn

    def result(self) -> R:
        return self._fn()


@dataclass
class Outcome(Generic[R]):
    value: R | None = None
    error: BaseException | None = None


def _attempt(fn: Callable[[T], R], item: T) -> Outcome[R]:
    try:
        return Outcome(value=fn(item))
    except Exception as exc:  # recorded as a failed checkpoint, the sweep goes on
        return Outcome(error=exc)


class Prefetcher(Generic[T, R]):
    """Yields ``(item, Outcome(load(item)))`` in order; with ``enabled`` item i+1 loads while i is used.

    At most two loaded items exist at once. ``after(fn)`` runs ``fn`` on the loading
    thread after the loads already queued (used to delete a downloaded checkpoint
    without racing the next download); without prefetch it runs at once.
    """

    def __init__(self, items: Sequence[T], load: Callable[[T], R], enabled: bool = True) -> None:
        self.items = list(items)
        self.load = load
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lmsat-prefetch") if enabled and self.items else None

    def _submit(self, fn: Callable[[], Any]) -> Future[Any] | _Now[Any]:
        return self.pool.submit(fn) if self.pool is not None else _Now(fn)

    def after(self, fn: Callable[[], Any]) -> None:
        if self.pool is not None:
            self.pool.submit(_attempt, lambda _: fn(), None)
        else:
            _attempt(lambda _: fn(), None)

    def __iter__(self) -> Iterator[tuple[T, Outcome[R]]]:
        if not self.items:
            return
        finished = False
        try:
            nxt = self._submit(lambda: _attempt(self.load, self.items[0]))
            for i, item in enumerate(self.items):
                outcome = nxt.result()
                if i + 1 < len(self.items):
                    following = self.items[i + 1]
                    nxt = self._submit(lambda following=following: _attempt(self.load, following))
                yield item, outcome
                del outcome
            finished = True
        finally:
            if self.pool is not None:
                # Normal end: let queued `after` work (deleting downloads) finish. Interrupted: drop it.
                self.pool.shutdown(wait=finished, cancel_futures=not finished)


# --- planning (validation before anything is written) ----------------------------------------


def _max_positions(config: Any) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _model_config(model: SweepModel, trust_remote_code: bool) -> Any | None:
    """The config of a model: hub id at its default branch, or the first local checkpoint that has a readable one."""
    if model.source == "hub":
        return load_config(ModelSpec(name=model.model, trust_remote_code=trust_remote_code))
    for ckpt in model.checkpoints:
        try:
            return load_config(ModelSpec(name=ckpt.load_name, trust_remote_code=trust_remote_code))
        except UserError:
            continue  # a broken checkpoint is recorded as failed later, not a reason to stop
    return None


def _override(values: dict[str, int], model: SweepModel) -> int | None:
    for name in (model.model, model.short_name):
        if name in values:
            return values[name]
    return values.get("*")


def check_overrides(values: dict[str, int], names: Sequence[str], option: str) -> None:
    """Every NAME of ``--option NAME=N`` must name a model (full or short name)."""
    from lmsat.loading.checkpoints import short_name

    known = set(names) | {short_name(n) for n in names}
    unknown = [k for k in values if k != "*" and k not in known]
    if unknown:
        raise UserError(f"{option} names '{unknown[0]}', which is not a model of this run; models: {', '.join(sorted(known))}.")


def existing_sample_params(store: Store) -> dict[str, Any] | None:
    """The sample and dtype the run directory's sweep records were measured with (None when empty)."""
    for rec in store.records(KIND):
        ts = rec.inputs.get("token_sample") or {}
        return {
            "dtype": rec.inputs.get("dtype"),
            "n_tokens_asked": ts.get("n_tokens_asked"),
            "seq_len": ts.get("seq_len"),
            "seed": ts.get("seed"),
            "corpus": ts.get("corpus"),
        }
    return None


def plan_sweep(
    models: list[SweepModel],
    corpus: CorpusSpec,
    output: str | Path,
    settings: SweepSettings,
    tokens_per_step: dict[str, int] | None = None,
    n_params: dict[str, int] | None = None,
) -> SweepPlan:
    """Check everything the user gave (corpus, device, dtype, configs, tokenizers, run directory) and write nothing."""
    if settings.n_tokens < 1:  # the same bound and wording as every other command's --tokens
        raise UserError(f"--tokens must be >= 1 (got {settings.n_tokens}).")
    if settings.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {settings.batch_size}).")
    if settings.layers not in LAYER_CHOICES:
        raise UserError(f"--layers must be one of {', '.join(LAYER_CHOICES)} (got '{settings.layers}').")
    if settings.seq_len is not None and settings.seq_len < 2:
        raise UserError(f"--seq-len must be at least 2 (got {settings.seq_len}).")
    tokens_per_step, n_params = tokens_per_step or {}, n_params or {}
    names = [m.model for m in models]
    check_overrides(tokens_per_step, names, "--tokens-per-step")
    check_overrides(n_params, names, "--params")
    torch_dtype(settings.dtype)
    device = resolve_device(settings.device)
    check_corpus(corpus)

    limits: dict[str, int] = {}
    for m in models:
        config = _model_config(m, settings.trust_remote_code)
        limit = _max_positions(config) if config is not None else None
        if limit:
            limits[m.model] = limit
    seq_len = settings.seq_len or min([MAX_AUTO_SEQ_LEN, *limits.values()])
    too_short = {k: v for k, v in limits.items() if v < seq_len}
    if too_short:
        name, limit = next(iter(too_short.items()))
        raise UserError(f"--seq-len {seq_len} is longer than the context of '{name}' ({limit} tokens); use --seq-len {limit} or less.")

    tokenizers: dict[str, TextTokenizer] = {}
    shared = load_tokenizer(settings.tokenizer) if settings.tokenizer else None
    by_source: dict[str, TextTokenizer] = {}
    for m in models:
        if shared is not None:
            tokenizers[m.model] = shared
            continue
        source = find_tokenizer_folder(m)
        if source not in by_source:
            by_source[source] = load_tokenizer(source)
        tokenizers[m.model] = by_source[source]

    previous = existing_sample_params(Store(output))
    if previous is not None:
        now = {"dtype": settings.dtype, "n_tokens_asked": settings.n_tokens, "seq_len": seq_len, "seed": settings.seed, "corpus": corpus.describe()}
        diff = [k for k in now if previous.get(k) != now[k]]
        if diff:
            shown = ", ".join(f"{k}={previous.get(k)!r} (now {now[k]!r})" for k in diff)
            raise UserError(
                f"'{output}' already holds a sweep measured with other settings: {shown}; "
                "re-run with the same --data/--tokens/--seq-len/--seed/--dtype, or use another --output."
            )
    return SweepPlan(
        models=models,
        device=device,
        seq_len=seq_len,
        tokenizers=tokenizers,
        tokens_per_step={m.model: _override(tokens_per_step, m) or m.tokens_per_step for m in models},
        n_params={m.model: _override(n_params, m) or m.n_params for m in models},
    )


# --- the sweep -------------------------------------------------------------------------------


def load_checkpoint(ckpt: Checkpoint, settings: SweepSettings, device: str) -> LoadedCheckpoint:
    """Load one checkpoint on ``device`` and hash its weights (runs on the prefetch thread)."""
    t0 = time.perf_counter()
    if ckpt.source == "local" and ckpt.path is not None and not has_weights(ckpt.path):
        raise UserError(f"checkpoint folder '{ckpt.path}' holds no weights (model.safetensors or pytorch_model.bin)")
    spec = ModelSpec(
        name=ckpt.load_name,
        revision=ckpt.load_revision,
        dtype=settings.dtype,
        device=device,
        trust_remote_code=settings.trust_remote_code,
    )
    loaded = load_model(spec, require_causal=True)
    w_hash, h_hash = weights_hashes(loaded.model)
    return LoadedCheckpoint(
        loaded=loaded, weights_hash=w_hash, head_hash=h_hash, n_params=count_parameters(loaded.model), load_time_s=time.perf_counter() - t0
    )


def sweep_inputs(ckpt: Checkpoint, settings: SweepSettings, device: str, sample: TokenSample, tokens_per_step: int | None) -> dict[str, Any]:
    """The exact inputs of one sweep record."""
    return {
        "model": ckpt.model,
        "revision": ckpt.revision,
        "step": ckpt.step,
        "model_seed": ckpt.seed,
        "source": ckpt.source,
        "path": ckpt.path,
        "dtype": settings.dtype,
        "device": device,
        "token_sample": sample.describe(),
        "tokens_per_step": tokens_per_step,
        **({"weights_fingerprint": fp} if (fp := _fingerprint(ckpt)) else {}),
        "lmsat_version": __version__,
    }


def _fingerprint(ckpt: Checkpoint) -> str | None:
    """A local checkpoint folder's weights fingerprint (loading.models.weights_fingerprint); None for the hub."""
    return weights_fingerprint(ModelSpec(ckpt.path)) if ckpt.source == "local" and ckpt.path else None


def _still_current(done: Record, ckpt: Checkpoint, quiet: bool = False) -> bool:
    return still_current(done, ModelSpec(ckpt.path), quiet) if ckpt.source == "local" and ckpt.path else True


def _empty_results() -> dict[str, Any]:
    return {
        "status": "failed",
        "error": None,
        "cross_entropy": None,
        "last_layer_anisotropy": None,
        "singular_entropy": None,
        "singular_entropy_linear": None,
        "effective_rank": None,
        "hidden_size": None,
        "n_params": None,
        "head_hash": None,
        "weights_hash": None,
        "duplicate_of": None,
        "wall_time_s": None,
    }


def _hash_index(store: Store) -> dict[str, list[tuple[int, str]]]:
    index: dict[str, list[tuple[int, str]]] = {}
    for rec in store.records(KIND):
        h = rec.results.get("weights_hash")
        if h:
            index.setdefault(h, []).append((int(rec.inputs.get("step", 0)), rec.key))
    return index


def todo_checkpoints(store: Store, models: Sequence[SweepModel], retry_failed: bool) -> tuple[list[tuple[SweepModel, Checkpoint]], int]:
    """(checkpoints still to measure in sweep order, number skipped because done)."""
    todo, skipped = [], 0
    for m in models:
        for ckpt in m.checkpoints:
            done = store.get(KIND, ckpt.key)
            if done is None or (retry_failed and done.results.get("status") != "ok") or not _still_current(done, ckpt):
                todo.append((m, ckpt))
            else:
                skipped += 1
    return todo, skipped


def token_samples(plan: SweepPlan, corpus: CorpusSpec, output: str | Path, settings: SweepSettings) -> dict[str, TokenSample]:
    """model name -> its token sample: built (or read back from the run directory) once per tokenizer."""
    samples: dict[str, TokenSample] = {}
    by_fp: dict[str, TokenSample] = {}
    for m in plan.models:
        tok = plan.tokenizers[m.model]
        if tok.fingerprint not in by_fp:
            by_fp[tok.fingerprint] = get_token_sample(output, corpus, tok, settings.n_tokens, plan.seq_len, settings.seed)
        samples[m.model] = by_fp[tok.fingerprint]
    return samples


def checkpoint_results(
    outcome: Outcome[LoadedCheckpoint], n_params: int | None, sample: TokenSample, settings: SweepSettings, key: str
) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """(results, arrays) of one loaded (or failed-to-load) checkpoint; frees the model.

    ``wall_time_s`` is the load time plus the time measured here; ``duplicate_of``
    is left None (it depends on the other records: the caller sets it).
    A checkpoint that failed to load or to measure gets ``status: "failed"`` and its error.
    """
    t0 = time.perf_counter()
    results = _empty_results()
    arrays: dict[str, np.ndarray] | None = None
    results["n_params"] = n_params
    got = outcome.value
    load_s = got.load_time_s if got is not None else 0.0
    if got is None:
        results["error"] = error_text(outcome.error or RuntimeError("not loaded"))
    else:
        results.update(
            weights_hash=got.weights_hash, head_hash=got.head_hash, n_params=n_params or got.n_params,
            hidden_size=got.loaded.hidden_size,
        )
        try:
            measured, s = measure_checkpoint(got.loaded, sample, settings.batch_size, settings.layers, description=key)
            results.update(measured)
            results["status"] = "ok"
            arrays = {"singular_values": s}
        except Exception as exc:  # a bad checkpoint is recorded, the sweep goes on
            results["error"] = error_text(exc)
        got.loaded.model = None
    results["wall_time_s"] = time.perf_counter() - t0 + load_s
    return results, arrays


def run_sweep(plan: SweepPlan, corpus: CorpusSpec, output: str | Path, settings: SweepSettings, say: Callable[[str], None] | None = None) -> SweepSummary:
    """Measure every checkpoint of ``plan`` not yet stored; one atomic record each (module docstring)."""
    import torch

    store = Store(output)
    t_start = time.perf_counter()
    samples = token_samples(plan, corpus, output, settings)

    todo, skipped = todo_checkpoints(store, plan.models, settings.retry_failed)
    summary = SweepSummary(total=skipped + len(todo), skipped=skipped)
    index = _hash_index(store)
    evict = not settings.keep_downloads
    before: dict[str, set[str]] = {}
    if evict:
        for m in plan.models:
            if m.source == "hub":
                before[m.model] = hub_cached_commits(m.model)

    # Per-checkpoint claims (Store.claim): processes sharing OUTPUT split the checkpoints, each measured once.
    # A claim is taken on the loading thread before the load, and released once the record is written.
    claims: dict[str, Any] = {}

    def load(job: tuple[SweepModel, Checkpoint]) -> LoadedCheckpoint | None:
        key = job[1].key
        claim = store.claim(KIND, key)
        if claim.__enter__():
            done = store.get(KIND, key)  # the previous holder may have finished it
            if (done is None or (settings.retry_failed and done.results.get("status") != "ok" and key not in measured_here)
                    or not _still_current(done, job[1], quiet=True)):
                claims[key] = claim
                return load_checkpoint(job[1], settings, plan.device)
        claim.__exit__(None, None, None)
        return None  # measured (or being measured) by another process

    measured_here: set[str] = set()
    prefetcher = Prefetcher(todo, load, enabled=settings.prefetch)
    try:
        for (m, ckpt), outcome in track(prefetcher, "sweep", total=len(todo), unit="checkpoints"):
            if outcome.value is None and outcome.error is None:
                summary.skipped += 1
                continue
            try:
                _measure_one(store, plan, settings, samples, index, summary, m, ckpt, outcome, say)
            finally:
                measured_here.add(ckpt.key)
                claim = claims.pop(ckpt.key, None)
                if claim is not None:
                    claim.__exit__(None, None, None)
            del outcome
            if evict and m.source == "hub":
                prefetcher.after(lambda m=m, ckpt=ckpt: _evict(m.model, ckpt.revision, before.get(m.model, set())))
            if plan.device == "cuda":
                torch.cuda.empty_cache()
    finally:
        for claim in list(claims.values()):  # interrupted: release the claim of a prefetched checkpoint
            claim.__exit__(None, None, None)
    normalise_duplicates(store, summary, say)
    summary.wall_time_s = time.perf_counter() - t_start
    return summary


def _measure_one(store: Store, plan: SweepPlan, settings: SweepSettings, samples: dict[str, TokenSample],
                 index: dict[str, list[tuple[int, str]]], summary: SweepSummary, m: SweepModel, ckpt: Checkpoint,
                 outcome: Outcome[LoadedCheckpoint], say: Callable[[str], None] | None) -> None:
    """Measure one claimed checkpoint and write its record (failed ones too)."""
    results, arrays = checkpoint_results(outcome, plan.n_params[m.model], samples[m.model], settings, ckpt.key)
    results["wall_time_s"] = round(results["wall_time_s"], 4)
    inputs = sweep_inputs(ckpt, settings, plan.device, samples[m.model], plan.tokens_per_step[m.model])
    write_record(store, index, summary, ckpt, inputs, results, arrays, say)


def _put(store: Store, key: str, inputs: dict[str, Any], results: dict[str, Any], arrays: dict[str, np.ndarray] | None) -> None:
    """Write one sweep record through its kind (results that are no field, ``layers``, go to ``extra``)."""
    fields = set(SweepRecord.result_fields())
    typed = {k: v for k, v in results.items() if k in fields}
    extra = {k: v for k, v in results.items() if k not in fields}
    SweepRecord(key=key, inputs=inputs, extra=extra, **typed).put(store, arrays)


def write_record(store: Store, index: dict[str, list[tuple[int, str]]], summary: SweepSummary, ckpt: Checkpoint,
                 inputs: dict[str, Any], results: dict[str, Any], arrays: dict[str, np.ndarray] | None,
                 say: Callable[[str], None] | None) -> None:
    """Store one checkpoint's record with its duplicate flag; the one rule of local and Ray sweeps.

    Duplicate weights: among the records with the same ``weights_hash``, the lowest
    (step, key) is the original and every other one has ``duplicate_of`` = its key,
    whatever the order the records were written in (Ray tasks finish in any order; a
    resumed sweep may add lower steps later). A record written before a lower-step copy
    arrives is rewritten (atomically) to point at it; ``summary`` and ``say`` report it.
    """
    h = results.get("weights_hash")
    me = (ckpt.step, ckpt.key)
    group = [x for x in index.get(h, []) if x[1] != ckpt.key] if h else []
    first = min(group + [me])
    results["duplicate_of"] = None if first == me else first[1]
    _put(store, ckpt.key, inputs, results, arrays)
    record_outcome(summary, ckpt.key, results, say)
    if not h:
        return
    index.setdefault(h, []).append(me)
    if first != me:
        return
    for _, key in group:
        rec = store.get(KIND, key)
        if rec is None or rec.results.get("duplicate_of") == ckpt.key:
            continue
        _put(store, key, rec.inputs, {**rec.results, "duplicate_of": ckpt.key}, rec.load_arrays() or None)
        summary.duplicates = [d for d in summary.duplicates if d[0] != key] + [(key, ckpt.key)]
        if say:
            say(f"duplicate weights: {key} has the same weights as {ckpt.key}")


def normalise_duplicates(store: Store, summary: SweepSummary | None = None, say: Callable[[str], None] | None = None) -> int:
    """Apply :func:`write_record`'s duplicate rule to every sweep record of ``store`` at once; return how many
    records it rewrote.

    Each process's sweep flags duplicates against the records it knows of. This pass, run at the end of
    every sweep (local and Ray), reads them all again: per ``weights_hash``, the lowest (step, key) is the
    original (``duplicate_of`` None) and every other record points at it; records without a hash point
    nowhere. It repairs what a per-process view cannot see: two sweeps sharing a run directory, a sweep
    killed between a record and the re-pointing of its copies, and a checkpoint re-measured because its
    weights changed (its copies of old are released, so they count as checkpoints again). Runs under an
    exclusive claim, so two sweeps ending together do not interleave.
    """
    while True:
        with store.claim(KIND, "|duplicate-rule|") as mine:
            if not mine:
                time.sleep(0.2)
                continue
            records = store.records(KIND)
            groups: dict[str, list[tuple[int, str]]] = {}
            for rec in records:
                h = rec.results.get("weights_hash")
                if h:
                    groups.setdefault(h, []).append((int(rec.inputs.get("step", 0)), rec.key))
            first = {h: min(g)[1] for h, g in groups.items()}
            fixed = 0
            for rec in records:
                h = rec.results.get("weights_hash")
                want = first[h] if h and first[h] != rec.key else None
                if rec.results.get("duplicate_of") == want:
                    continue
                _put(store, rec.key, rec.inputs, {**rec.results, "duplicate_of": want}, rec.load_arrays() or None)
                fixed += 1
                if summary is not None:
                    summary.duplicates = [d for d in summary.duplicates if d[0] != rec.key] + ([(rec.key, want)] if want else [])
                if say:
                    say(f"duplicate weights: {rec.key} has the same weights as {want}" if want else
                        f"{rec.key} no longer repeats another checkpoint's weights: it counts as a checkpoint again")
            return fixed


def record_outcome(summary: SweepSummary, key: str, results: dict[str, Any], say: Callable[[str], None] | None) -> None:
    """Count one stored checkpoint in ``summary`` and say when it failed or repeats another's weights (local and Ray)."""
    summary.measured += 1
    if results["status"] != "ok":
        summary.failed.append(key)
        if say:
            say(f"failed: {key}: {results['error']}")
    if results["duplicate_of"]:
        summary.duplicates.append((key, results["duplicate_of"]))
        if say:
            say(f"duplicate weights: {key} has the same weights as {results['duplicate_of']}")


def _evict(repo: str, revision: str, keep: set[str]) -> None:
    commit = hub_commit_of(repo, revision)
    if commit and commit not in keep:
        evict_hub_commit(commit)


def sweep_records(output: str | Path) -> list[Record]:
    """Every sweep record of a run directory (a clear error when there are none)."""
    records = Store(output, readonly=True).records(KIND)  # readers skip a damaged record with a warning; the sweep redoes it
    if not records:
        raise UserError(f"'{output}' holds no sweep records ({Path(output) / KIND}); run `lmsat sweep ... -o {output}` first.")
    return records
