"""The rank probe of a model: learning-rate search, full-budget run per rank, references, table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lmsat.errors import UserError
from lmsat.experiments.common import model_inputs, model_key
from lmsat.experiments.rank_probe.features import (
    FeatureCache,
    extract_features,
    feature_identity,
    open_feature_cache,
)
from lmsat.experiments.rank_probe.fit import (
    TrainResult,
    chunk_rows,
    evaluate_head,
    train_head,
)
from lmsat.experiments.rank_probe.settings import (
    _EVAL_ROWS,
    KIND,
    REF_KIND,
    ProbeSettings,
    default_ranks,
    dev_windows,
    split_windows,
)
from lmsat.experiments.rank_probe.truncation import (
    OwnHeadFactors,
    own_head_factors,
    truncation_curve,
)
from lmsat.kinds.rank_probe import RankProbeRecord, RankProbeRefRecord, run_frame
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
from lmsat.loading.tokens import get_token_sample
from lmsat.measure.loss import chunked_cross_entropy
from lmsat.measure.spectrum import singular_values, w_error_curve
from lmsat.nn.beyond import HeadSpec, build_head
from lmsat.nn.heads import ProbeHead, check_rank
from lmsat.store import Record, Store, atomic_write_csv, fingerprint, warn

# --- one rank: search, then the full budget ---------------------------------------------------


def _run_key(prefix: str, rank_label: str, lr: float, stage: str) -> str:
    return f"{prefix}|{rank_label}|lr={lr:g}|{stage}"


def run_tag(settings: ProbeSettings) -> str:
    """The head and initialisation in a record key: "" for the study's softmax + gaussian (keys of
    earlier lmsat versions), else "|<head>|<init>" (e.g. "|mos:4|svd")."""
    head = HeadSpec.parse(settings.head).label
    return "" if (head, settings.init) == ("softmax", "gaussian") else f"|{head}|{settings.init}"


@dataclass(frozen=True)
class HeadJob:
    """What a worker needs to train and evaluate one head of the probe (picklable: a Ray task's argument).

    ``folder`` is the feature cache (read by the worker: with ``--ray`` every node must see the run
    directory's path); ``own_head`` the SVD factors of the model's own head for ``--init svd``.
    """

    folder: str
    label: str  # "r=64", "full" or "full-plain"
    rank: int  # the head's rank (min(V, d) for the full-rank head)
    plain: bool  # one V x d matrix W instead of A B
    head_seed: int
    settings: ProbeSettings
    device: str
    own_head: OwnHeadFactors | None

    def new_head(self, cache: FeatureCache) -> ProbeHead:
        svd = self.own_head if self.settings.init == "svd" else None
        return build_head(HeadSpec.parse(self.settings.head), cache.vocab_size, cache.hidden_size, self.rank, cache.feature_rms,
                          self.head_seed, svd.factors if svd else None, svd.bias if svd else None, plain=self.plain)


_OPEN_CACHES: dict[str, FeatureCache] = {}  # caches this process opened (the driver's are checked on open)


def _cache_of(job: HeadJob) -> FeatureCache:
    """The job's feature cache: the driver's (already verified), or opened once per worker process."""
    if job.folder not in _OPEN_CACHES:
        _OPEN_CACHES.clear()
        _OPEN_CACHES[job.folder] = open_feature_cache(job.folder, verify=False)
    return _OPEN_CACHES[job.folder]


def search_unit(job: HeadJob, lr: float) -> dict[str, Any]:
    """One learning-rate search run of ``job``'s head: ``settings.search_steps`` steps at peak rate ``lr``
    on the training windows minus the development slice, evaluated on that slice (the results of a
    ``...|search`` record). ``lr == 0`` evaluates the untrained head (the SVD truncation)."""
    s, cache = job.settings, _cache_of(job)
    fit_seqs, dev_seqs = dev_windows(cache.train.n_seqs, s.dev_frac, s.seed)
    head = job.new_head(cache)
    if lr == 0.0:  # the untrained head: no steps
        tr = TrainResult(float("nan"), 0, 0, 0.0, False)
    else:
        tr = train_head(head, cache.train, fit_seqs, s.search_steps, lr, s, job.device, seed=job.head_seed,
                        description=f"search {job.label} lr={lr:g}")
    dev = evaluate_head(head, cache.train, dev_seqs, job.device, s.chunk_tokens) if not tr.diverged else None
    return {
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


def final_unit(
    job: HeadJob, lr: float, search: dict[str, float | None], at_edge: bool, w_error: float | None
) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """The full-budget run of ``job``'s head at the chosen rate ``lr`` on all training windows, evaluated on
    the held-out windows before (step 0) and after training: (results, arrays) of a ``...|final`` record."""
    s, cache = job.settings, _cache_of(job)
    head = job.new_head(cache)
    eval_seqs = np.arange(cache.eval.n_seqs)
    start = evaluate_head(head, cache.eval, eval_seqs, job.device, s.chunk_tokens)
    if lr == 0.0:  # the search found no rate that improves on the untrained (truncated) head
        tr = TrainResult(float("nan"), 0, 0, 0.0, False)
    else:
        tr = train_head(head, cache.train, np.arange(cache.train.n_seqs), s.steps, lr, s, job.device, seed=job.head_seed,
                        description=f"train {job.label} lr={lr:g}")
    if tr.diverged:
        ev = {"loss": None, "loss_se": None, "perplexity": None, "accuracy": None, "n_tokens": None, "nll": None}
    else:
        ev = evaluate_head(head, cache.eval, eval_seqs, job.device, s.chunk_tokens)
    results = {
        "stage": "final",
        "head": "low-rank" if job.label.startswith("r=") else "full-rank",
        "head_function": HeadSpec.parse(s.head).label,
        "init": s.init,
        "parametrization": "W" if job.plain else "A B",
        "rank": job.rank,
        "lr": lr,
        "lr_at_grid_edge": at_edge,
        "loss": ev["loss"],
        "loss_se": ev["loss_se"],
        "perplexity": ev["perplexity"],
        "accuracy": ev["accuracy"],
        "eval_tokens": ev["n_tokens"],
        "step0_loss": start["loss"],
        "step0_loss_se": start["loss_se"],
        "step0_accuracy": start["accuracy"],
        "w_error": w_error,
        "search_dev_loss": search,
        "train_loss": tr.train_loss,
        "diverged": tr.diverged,
        "steps": tr.steps,
        "tokens_seen": tr.tokens_seen,
        "seconds": tr.seconds,
        "train_tokens_per_s": tr.tokens_seen / tr.seconds if tr.seconds > 0 else None,
        "n_parameters": head.n_parameters(),
        "flops_per_token": head.flops_per_token(),
    }
    return results, ({"eval_nll": ev["nll"]} if ev["nll"] is not None else None)


@dataclass
class _Head:
    """The driver's view of one head: its job, record keys and inputs, and the rates it searches."""

    job: HeadJob
    prefix: str  # "<model>" + run tag
    record_cls: type[RankProbeRecord]
    base_inputs: dict[str, Any]
    w_error: float | None

    @property
    def candidates(self) -> tuple[float, ...]:
        s = self.job.settings
        return ((0.0,) if s.keeps_untrained else ()) + tuple(s.rates)

    def key(self, lr: float, stage: str) -> str:
        return _run_key(self.prefix, self.job.label, lr, stage)

    def get(self, store: Store, lr: float, stage: str) -> Record | None:
        return store.get(self.record_cls.KIND, self.key(lr, stage))

    def put(self, store: Store, lr: float, stage: str, results: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> Record:
        inputs = {**self.base_inputs, "lr": lr, "stage": stage}
        return self.record_cls.of(self.key(lr, stage), inputs, results).put(store, arrays=arrays)

    def choose(self, search: dict[str, float | None], model: str) -> tuple[float, bool]:
        """(best rate, whether it sits at an edge of --lr-grid) from the search's development losses
        (the lowest loss, ties to the smaller rate); one candidate skips the search. Warns at an edge."""
        candidates, rates = self.candidates, self.job.settings.rates
        if len(candidates) > 1:
            finite = {lr: search[f"{lr:g}"] for lr in candidates if search.get(f"{lr:g}") is not None}
            if not finite:
                raise UserError(f"every learning rate of --lr-grid diverged for {self.job.label}; try smaller rates.")
            best = min(finite, key=lambda lr: (finite[lr], lr))
        else:
            best = candidates[0]
        edges = {max(rates)} | ({min(rates)} if not self.job.settings.keeps_untrained else set())
        at_edge = len(rates) > 1 and best in edges  # a grid of one rate has no edge to report
        if at_edge:
            side = "largest" if best == max(rates) else "smallest"
            warn(f"{model} {self.job.label}: the chosen learning rate {best:g} is the {side} of --lr-grid; "
                 "the best rate may lie beyond it (extend --lr-grid).")
        return best, at_edge


def _head(cache: FeatureCache, prefix: str, rank: int | None, settings: ProbeSettings, inputs: dict[str, Any], device: str,
          w_error: np.ndarray | None, own_head: OwnHeadFactors | None) -> _Head:
    if settings.init == "svd" and own_head is None:
        raise ValueError("--init svd needs the model's own head (own_head)")
    spec = HeadSpec.parse(settings.head)
    head_kind = "low-rank" if rank is not None else "full-rank"
    plain = rank is None and settings.full_rank_head == "plain"
    label = f"r={rank}" if rank is not None else ("full-plain" if plain else "full")
    true_rank = rank if rank is not None else min(cache.vocab_size, cache.hidden_size)
    parametrization = "W" if plain else "A B"
    head_seed = int(fingerprint([settings.seed, head_kind, true_rank])[:8], 16)
    base_inputs = {**inputs, "head": head_kind, "rank": true_rank, "parametrization": parametrization, "features": cache.hash,
                   "head_function": spec.label, "init": settings.init}
    _OPEN_CACHES.clear()
    _OPEN_CACHES[str(cache.folder)] = cache
    job = HeadJob(str(cache.folder), label, true_rank, plain, head_seed, settings, device, own_head)
    w_at_r = float(w_error[true_rank]) if w_error is not None and true_rank < len(w_error) else None
    return _Head(job, prefix + run_tag(settings), RankProbeRecord if rank is not None else RankProbeRefRecord, base_inputs, w_at_r)


def probe_rank(
    store: Store,
    cache: FeatureCache,
    prefix: str,
    rank: int | None,
    settings: ProbeSettings,
    inputs: dict[str, Any],
    device: str,
    w_error: np.ndarray | None = None,
    own_head: OwnHeadFactors | None = None,
) -> Record:
    """Learning-rate search then full-budget training of one head, in this process; every finished run is a record.

    ``rank=None`` trains the full-rank reference head (kind ``rank_probe_ref``): with
    ``settings.full_rank_head == "factorized"`` the probe's own W = A B at
    r = min(V, d) (key ``<model>|full|...``), with "plain" a single V x d matrix
    (key ``<model>|full-plain|...``). Runs whose record exists are read back, not repeated.
    ``settings.init == "svd"`` starts every head from the SVD factors of the model's own
    head (``own_head``); the final run records the held-out loss at step 0 too (for the
    softmax head: the loss of the Eckart-Young truncation itself).
    """
    head = _head(cache, prefix, rank, settings, inputs, device, w_error, own_head)
    search: dict[str, float | None] = {}
    if len(head.candidates) > 1:
        for lr in head.candidates:
            rec = head.get(store, lr, "search") or head.put(store, lr, "search", search_unit(head.job, lr))
            search[f"{lr:g}"] = rec.results.get("dev_loss")
    best_lr, at_edge = head.choose(search, prefix)
    rec = head.get(store, best_lr, "final")
    if rec is not None:
        return rec
    results, arrays = final_unit(head.job, best_lr, search, at_edge, head.w_error)
    return head.put(store, best_lr, "final", results, arrays)


def probe_ranks_distributed(
    store: Store,
    cache: FeatureCache,
    prefix: str,
    ranks: list[int | None],
    settings: ProbeSettings,
    inputs: dict[str, Any],
    executor: Any,
    resources: Any,
    device: str,
    w_error: np.ndarray | None = None,
    own_head: OwnHeadFactors | None = None,
) -> list[Record]:
    """:func:`probe_rank` of every rank (None: the full-rank head) as units of ``executor`` (``--ray``).

    Two waves: every (rank, learning rate) search run not yet stored, then every rank's final run at
    its chosen rate; each unit computes in a task (:func:`search_unit`, :func:`final_unit`, the code a
    local run calls) and the driver alone writes its record, so the records equal a local run's and a
    killed run resumes with or without ``--ray``.
    """
    from lmsat.progress import track

    from lmsat.executor import ONE_CPU

    resources = resources or ONE_CPU
    heads = [_head(cache, prefix, r, settings, inputs, device, w_error, own_head) for r in ranks]
    todo = [(h, lr) for h in heads if len(h.candidates) > 1 for lr in h.candidates if h.get(store, lr, "search") is None]
    units = [(h.job, lr) for h, lr in todo]
    for done in track(executor.map(search_unit, units, resources, fresh_workers=False), "rank-probe searches (Ray)", total=len(units), unit="runs"):
        _unit_failed(done, todo[done.index][0].job.label)
        h, lr = todo[done.index]
        h.put(store, lr, "search", done.value)
    finals: list[tuple[_Head, float, dict[str, float | None], bool]] = []
    out: dict[int, Record] = {}
    for i, h in enumerate(heads):
        search = {f"{lr:g}": h.get(store, lr, "search").results.get("dev_loss") for lr in h.candidates} if len(h.candidates) > 1 else {}
        best_lr, at_edge = h.choose(search, prefix)
        rec = h.get(store, best_lr, "final")
        if rec is not None:
            out[i] = rec
        else:
            finals.append((h, best_lr, search, at_edge))
    index = {id(h): i for i, h in enumerate(heads)}
    units = [(h.job, lr, search, at_edge, h.w_error) for h, lr, search, at_edge in finals]
    for done in track(executor.map(final_unit, units, resources, fresh_workers=False), "rank-probe final runs (Ray)", total=len(units), unit="runs"):
        h, lr = finals[done.index][0], finals[done.index][1]
        _unit_failed(done, h.job.label)
        results, arrays = done.value
        out[index[id(h)]] = h.put(store, lr, "final", results, arrays)
    return [out[i] for i in range(len(heads))]


def _unit_failed(done: Any, label: str) -> None:
    """A unit that raised or whose worker died every time: its UserError again, else one line to re-run."""
    if done.value is not None:
        return
    done.reraise_user_error()
    raise UserError(f"the rank-probe run of {label} did not finish on the cluster ({(done.error or 'no result')[:300]}); "
                    "finished runs are stored: re-run the same command to continue.")


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
            check_rank(r, V, d, spec.label)  # the one rank check
        plans.append(_Plan(spec, model_key(spec), config, d, V))
    return plans


def _model_records(store: Store, key: str) -> list[Record]:
    mine = lambda r: r.inputs.get("model_key") == key  # noqa: E731
    return store.records(KIND, mine) + store.records(REF_KIND, mine)


def _same_corpus(stored: Any, want: dict[str, Any]) -> bool:
    """The stored corpus description matches on every field both know (older records lack newer fields)."""
    if not isinstance(stored, dict):
        return True  # records without a stored corpus cannot be told apart; keep them
    return all(stored[k] == want[k] for k in stored.keys() & want.keys())


def check_resumable(store: Store, plans: list[_Plan], settings: ProbeSettings, corpus: CorpusSpec, force: bool) -> None:
    """Existing records of a model must come from the same settings and corpus (else: --force or another run dir).

    The keys name the model, head and rank only; the settings hash and the corpus stored with each
    record are what make two runs on other inputs distinct, so both are checked before anything is written.
    """
    import json

    want = settings.results_hash()
    want_corpus = json.loads(json.dumps(corpus.describe()))
    for plan in plans:
        recs = _model_records(store, plan.key)
        other = [r for r in recs if r.inputs.get("settings_hash") != want]
        what = "other settings"
        if not other:
            other = [r for r in recs if not _same_corpus((r.inputs.get("token_sample") or {}).get("corpus"), want_corpus)]
            what = "another corpus (--data and its options)"
        if other and not force:
            raise UserError(
                f"'{store.root}' holds rank-probe results for {plan.spec.label} made with {what} "
                f"(e.g. {other[0].key}); use another --output, the same inputs, or --force to recompute them."
            )



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
    return RankProbeRefRecord.of(f"{prefix}|own-head", {**inputs, "head": "own", "features": cache.hash}, results).put(
        store, arrays={"singular_values": s, "w_error": curve})


def run_rank_probe(
    specs: list[ModelSpec],
    corpus: CorpusSpec,
    output: str | Path,
    ranks: list[int] | None = None,
    settings: ProbeSettings | None = None,
    force: bool = False,
    executor: Any = None,
    resources: Any = None,
) -> list[Record]:
    """The rank probe of every model: features (cached), own-head and full-rank references, one head per rank.

    ``ranks=None`` uses :func:`default_ranks` of each model. Every input is checked
    before anything is written; finished runs are kept and skipped on a re-run.
    ``executor`` (an :mod:`lmsat.executor` executor, e.g. ``RayExecutor``; None: this process, rank
    after rank) runs the (rank, learning rate) runs as independent units with ``resources`` each
    (:func:`probe_ranks_distributed`); the records are the same. Writes ``rank_probe.csv`` of the
    whole run directory at the end; the figures (and the CSV again):
    :func:`lmsat.figures.rank_probe.refresh_outputs`, which ``lmsat rank-probe`` calls.
    """
    settings = settings or ProbeSettings()
    settings.validate()
    plans = plan_models(specs, ranks)
    check_corpus(corpus)
    store = Store(output)
    check_resumable(store, plans, settings, corpus, force)
    out: list[Record] = []
    for plan in plans:
        if force:
            for rec in _model_records(store, plan.key):
                store.delete(rec.kind, rec.key)
        out.extend(_probe_model(store, plan, corpus, Path(output), ranks or default_ranks(plan.hidden_size), settings,
                                executor, resources))
    atomic_write_csv(Path(output) / "rank_probe.csv", rank_probe_table(store))
    return out


def _probe_model(
    store: Store, plan: _Plan, corpus: CorpusSpec, output: Path, ranks: list[int], settings: ProbeSettings,
    executor: Any = None, resources: Any = None,
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
    own = own_head_factors(folder, model)
    loaded = None  # the probes need only the cached representations
    w_err = ref.load_arrays()["w_error"]
    records = [ref, truncation_curve(store, cache, plan.key, own, inputs, device, ranks, settings.chunk_tokens)]
    heads: list[int | None] = ([None] if settings.full_rank else []) + list(ranks)
    if executor is not None:
        from lmsat.executor import task_device

        probes = probe_ranks_distributed(store, cache, plan.key, heads, settings, inputs, executor, resources,
                                         task_device(executor, spec.device), w_err, own)
    else:
        probes = []
        for r in heads:
            probes.append(probe_rank(store, cache, plan.key, r, settings, inputs, device, w_err, own))
            if r is None:
                _check_full_rank(plan.key, probes[-1], ref)
    if executor is not None and settings.full_rank:
        _check_full_rank(plan.key, probes[0], ref)
    return records + probes


def _check_full_rank(label: str, full: Record, own: Record) -> None:
    """Warn when the full-rank probe ends worse than the model's own head by more than its standard error."""
    loss, se, own_loss = full.results.get("loss"), full.results.get("loss_se"), own.results.get("loss")
    if loss is not None and se is not None and own_loss is not None and loss - own_loss > se:
        warn(f"{label}: the full-rank probe ends {loss - own_loss:.3f} nats above the model's own head "
             f"(standard error {se:.3f}): the probe's budget, not the rank, limits its loss; "
             "raise --steps / --train-tokens (or use --init svd) before reading the curve.")


# --- derived table ----------------------------------------------------------------------------


def rank_probe_table(store: Store) -> pd.DataFrame:
    """``rank_probe.csv`` of a run directory: :func:`lmsat.kinds.rank_probe.run_frame` of its records
    (references first, then probes)."""
    return run_frame(RankProbeRefRecord.load(store) + RankProbeRecord.load(store))
