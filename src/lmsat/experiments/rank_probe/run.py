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
from lmsat.experiments.rank_probe.fit import TrainResult, chunk_rows, evaluate_head, train_head
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
from lmsat.store import Record, Store, fingerprint, warn

# --- one rank: search, then the full budget ---------------------------------------------------


def _run_key(prefix: str, rank_label: str, lr: float, stage: str) -> str:
    return f"{prefix}|{rank_label}|lr={lr:g}|{stage}"


def run_tag(settings: ProbeSettings) -> str:
    """The head and initialisation in a record key: "" for the study's softmax + gaussian (keys of
    earlier lmsat versions), else "|<head>|<init>" (e.g. "|mos:4|svd")."""
    head = HeadSpec.parse(settings.head).label
    return "" if (head, settings.init) == ("softmax", "gaussian") else f"|{head}|{settings.init}"


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
    """Learning-rate search then full-budget training of one head; every finished run is a record.

    ``rank=None`` trains the full-rank reference head (kind ``rank_probe_ref``): with
    ``settings.full_rank_head == "factorized"`` the probe's own W = A B at
    r = min(V, d) (key ``<model>|full|...``), with "plain" a single V x d matrix
    (key ``<model>|full-plain|...``). Runs whose record exists are read back, not repeated.
    ``settings.init == "svd"`` starts every head from the SVD factors of the model's own
    head (``own_head``); the final run records the held-out loss at step 0 too (for the
    softmax head: the loss of the Eckart-Young truncation itself).
    """
    if settings.init == "svd" and own_head is None:
        raise ValueError("--init svd needs the model's own head (own_head)")
    spec = HeadSpec.parse(settings.head)
    kind = KIND if rank is not None else REF_KIND
    head_kind = "low-rank" if rank is not None else "full-rank"
    plain = rank is None and settings.full_rank_head == "plain"
    rank_label = f"r={rank}" if rank is not None else ("full-plain" if plain else "full")
    V, d = cache.vocab_size, cache.hidden_size
    true_rank = rank if rank is not None else min(V, d)
    parametrization = "W" if plain else "A B"
    head_seed = int(fingerprint([settings.seed, head_kind, true_rank])[:8], 16)
    base_inputs = {**inputs, "head": head_kind, "rank": true_rank, "parametrization": parametrization, "features": cache.hash,
                   "head_function": spec.label, "init": settings.init}
    tag = run_tag(settings)

    def new_head() -> ProbeHead:
        svd = own_head if settings.init == "svd" else None
        return build_head(spec, V, d, true_rank, cache.feature_rms, head_seed, svd.factors if svd else None,
                          svd.bias if svd else None, plain=plain)

    all_train = np.arange(cache.train.n_seqs)
    search: dict[str, float | None] = {}
    rates = settings.rates
    candidates = ((0.0,) if settings.keeps_untrained else ()) + tuple(rates)
    if len(candidates) > 1:
        fit_seqs, dev_seqs = dev_windows(cache.train.n_seqs, settings.dev_frac, settings.seed)
        for lr in candidates:
            key = _run_key(prefix + tag, rank_label, lr, "search")
            rec = store.get(kind, key)
            if rec is None:
                head = new_head()
                if lr == 0.0:  # the untrained head: no steps
                    tr = TrainResult(float("nan"), 0, 0, 0.0, False)
                else:
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
        finite = {lr: search[f"{lr:g}"] for lr in candidates if search[f"{lr:g}"] is not None}
        if not finite:
            raise UserError(
                f"every learning rate of --lr-grid diverged for {rank_label}; try smaller rates."
            )
        best_lr = min(finite, key=lambda lr: (finite[lr], lr))
    else:
        best_lr = candidates[0]
    edges = {max(rates)} | ({min(rates)} if not settings.keeps_untrained else set())
    at_edge = len(rates) > 1 and best_lr in edges  # a grid of one rate has no edge to report
    if at_edge:
        side = "largest" if best_lr == max(rates) else "smallest"
        warn(f"{prefix} {rank_label}: the chosen learning rate {best_lr:g} is the {side} of --lr-grid; "
             "the best rate may lie beyond it (extend --lr-grid).")
    key = _run_key(prefix + tag, rank_label, best_lr, "final")
    rec = store.get(kind, key)
    if rec is not None:
        return rec
    head = new_head()
    start = evaluate_head(head, cache.eval, np.arange(cache.eval.n_seqs), device, settings.chunk_tokens)
    if best_lr == 0.0:  # the search found no rate that improves on the untrained (truncated) head
        tr = TrainResult(float("nan"), 0, 0, 0.0, False)
    else:
        tr = train_head(head, cache.train, all_train, settings.steps, best_lr, settings, device, seed=head_seed,
                        description=f"train {rank_label} lr={best_lr:g}")
    if tr.diverged:
        ev = {"loss": None, "loss_se": None, "perplexity": None, "accuracy": None, "n_tokens": None, "nll": None}
    else:
        ev = evaluate_head(head, cache.eval, np.arange(cache.eval.n_seqs), device, settings.chunk_tokens)
    results = {
        "stage": "final",
        "head": head_kind,
        "head_function": spec.label,
        "init": settings.init,
        "parametrization": parametrization,
        "rank": true_rank,
        "lr": best_lr,
        "lr_at_grid_edge": at_edge,
        "loss": ev["loss"],
        "loss_se": ev["loss_se"],
        "perplexity": ev["perplexity"],
        "accuracy": ev["accuracy"],
        "eval_tokens": ev["n_tokens"],
        "step0_loss": start["loss"],
        "step0_loss_se": start["loss_se"],
        "step0_accuracy": start["accuracy"],
        "w_error": float(w_error[true_rank]) if w_error is not None and true_rank < len(w_error) else None,
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
    check_resumable(store, plans, settings, corpus, force)
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
    own = own_head_factors(folder, model)
    loaded = None  # the probes need only the cached representations
    w_err = ref.load_arrays()["w_error"]
    records = [ref, truncation_curve(store, cache, plan.key, own, inputs, device, ranks, settings.chunk_tokens)]
    if settings.full_rank:
        full = probe_rank(store, cache, plan.key, None, settings, inputs, device, w_err, own)
        records.append(full)
        _check_full_rank(plan.key, full, ref)
    for r in ranks:
        records.append(probe_rank(store, cache, plan.key, r, settings, inputs, device, w_err, own))
    return records


def _check_full_rank(label: str, full: Record, own: Record) -> None:
    """Warn when the full-rank probe ends worse than the model's own head by more than its standard error."""
    loss, se, own_loss = full.results.get("loss"), full.results.get("loss_se"), own.results.get("loss")
    if loss is not None and se is not None and own_loss is not None and loss - own_loss > se:
        warn(f"{label}: the full-rank probe ends {loss - own_loss:.3f} nats above the model's own head "
             f"(standard error {se:.3f}): the probe's budget, not the rank, limits its loss; "
             "raise --steps / --train-tokens (or use --init svd) before reading the curve.")


# --- derived table ----------------------------------------------------------------------------


def rank_probe_table(store: Store) -> pd.DataFrame:
    """One row per model and head (final runs and references), read from the records.

    Columns: model (record key of the model), revision, gguf_file, head (low-rank / full-rank / own),
    parametrization ("A B" or "W"), head_function (softmax, mos:K, sigsoftmax, mlp), init (svd or gaussian),
    rank, step0_loss (held-out loss before training: for an SVD-initialised softmax head, the truncation's), lr, loss (nats/token), loss_se (its standard error over the held-out tokens), perplexity,
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
                    # runs of lmsat versions before --head/--init: the softmax head, the study's gaussian init
                    "head_function": None if res.get("head") == "own" else res.get("head_function", "softmax"),
                    "init": None if res.get("head") == "own" else res.get("init", "gaussian"),
                    "rank": res.get("rank"),
                    "lr": res.get("lr"),
                    "loss": res.get("loss"),
                    "loss_se": res.get("loss_se"),
                    "step0_loss": res.get("step0_loss"),
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
    return frame.sort_values(["model", "_o", "head_function", "init", "rank", "parametrization"], na_position="last").drop(columns="_o").reset_index(drop=True)
