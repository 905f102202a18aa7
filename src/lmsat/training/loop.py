"""The training loop of one model, and a family of models (one per hidden size).

The recipe is in :mod:`lmsat.training` (module docstring of :mod:`lmsat.training.train`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lmsat import __version__
from lmsat.errors import UserError
from lmsat.loading.corpus import CorpusSpec
from lmsat.loading.tokenizers import TextTokenizer
from lmsat.kinds.train import TrainRecord
from lmsat.measure.saturation import best_final_rise
from lmsat.store import Record, Store, atomic_write_json
from lmsat.training.checkpoints import (
    append_metrics,
    check_identity,
    list_checkpoints,
    load_resume_point,
    read_metrics,
    restart_metrics,
    save_checkpoint,
    training_state,
)
from lmsat.training.config import (
    KIND,
    TRAIN_CONFIG,
    TrainConfig,
    checkpoint_steps,
    lr_at,
)
from lmsat.training.data import (
    FamilyInputs,
    TrainingData,
    batch_indices,
    prepare_data,
    resolve_inputs,
)
from lmsat.training.model import (
    _autocast,
    build_model,
    count_params,
    evaluate,
    freeze_head,
    head_cost,
    make_optimizer,
    spectral_penalty,
)


def train_model(cfg: TrainConfig, inputs: FamilyInputs, data: TrainingData, output: str | Path, force: bool = False) -> Record:
    """Train (or resume, or skip when finished) one model; returns its ``train`` record.

    Writes ``output/<model_name>/`` (checkpoints, metrics.jsonl, train_config.json) and the
    ``train`` record of the model. See :mod:`lmsat.training.train` for the recipe.
    """
    import torch

    from lmsat.loading.models import resolve_device
    from lmsat.progress import track

    cfg.validate()
    device = resolve_device(cfg.device)
    store, model_dir = Store(output), Path(output) / cfg.model_name
    done = _prepare_folder(cfg, inputs, data, store, model_dir, force)
    if done is not None:
        return done
    def build() -> Any:
        return build_model(cfg, inputs.tokenizer.vocab_size, inputs.tokenizer.eos_id)

    resume = load_resume_point(model_dir, cfg.model_name, build=None if cfg.head == "softmax" else build)
    model = resume.model if resume else build()
    freeze_head(model, cfg.freeze_head)  # requires_grad is not saved in a checkpoint
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    if resume:
        optimizer.load_state_dict(resume.optimizer_state)
    start = resume.step if resume else 0
    clock = _Clock(resume.elapsed if resume else 0.0)
    running_sum, running_n = resume.running_loss if resume else (0.0, 0)
    running = torch.tensor(running_sum, dtype=torch.float64, device=device)
    _write_train_config(cfg, inputs, data, model_dir, model)
    metrics = restart_metrics(model_dir, upto=start)
    schedule = checkpoint_steps(cfg.steps, cfg.checkpoint_every)

    def checkpoint(step: int) -> None:
        append_metrics(metrics, {"step": step, "tokens": step * cfg.tokens_per_step, **evaluate(model, data, cfg.batch_size, device).as_json()})
        state = training_state(optimizer, step, clock.now(), (float(running), running_n))
        save_checkpoint(model, inputs.tokenizer, model_dir, step, state)

    if start == 0 and 0 not in list_checkpoints(model_dir):
        checkpoint(0)
    for step in track(range(start, cfg.steps), f"train {cfg.model_name}", total=cfg.steps - start):
        lr = lr_at(step, cfg)
        x = torch.from_numpy(data.train[batch_indices(step, cfg.batch_size, len(data.train), cfg.order_seed)]).to(device)
        loss, grad_norm = train_step(model, optimizer, x, lr, cfg.grad_clip, device, cfg.head_spectral_reg)
        running += loss.double()
        running_n += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            append_metrics(metrics, {"step": step + 1, "train_loss": float(running) / running_n, "lr": lr,
                                     "grad_norm": float(grad_norm), "tokens": (step + 1) * cfg.tokens_per_step,
                                     "elapsed_s": round(clock.now(), 3)})
            running.zero_()
            running_n = 0
        if step + 1 in schedule:
            checkpoint(step + 1)
    n_params, n_params_body = count_params(model)
    results, arrays = _record_results(cfg, model_dir, n_params, n_params_body, clock.now(), head_cost(model))
    return TrainRecord(key=cfg.model_name, inputs=_record_inputs(cfg, inputs, data, device), **results).put(store, arrays)


def train_step(model: Any, optimizer: Any, x: Any, lr: float, grad_clip: float, device: str, spectral_reg: float = 0.0) -> tuple[Any, Any]:
    """One AdamW update on the batch ``x`` (batch, L + 1) at learning rate ``lr``: (loss, gradient norm) as tensors.

    loss = mean over the batch's targets of -ln q(x[:, t+1] | x[:, :t+1]) (nats/token); the
    gradient's global L2 norm is clipped to ``grad_clip`` before the update. With
    ``spectral_reg`` = lambda > 0 the minimised objective is loss + lambda * :func:`spectral_penalty`
    (the returned loss stays the cross-entropy alone).
    """
    import torch
    import torch.nn.functional as F

    for group in optimizer.param_groups:
        group["lr"] = lr
    with _autocast(device):
        logits = model(input_ids=x[:, :-1]).logits
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    objective = loss + spectral_reg * spectral_penalty(model) if spectral_reg else loss
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    return loss.detach(), grad_norm


class _Clock:
    """Training seconds: those of earlier sessions (from the resume point) plus this session's."""

    def __init__(self, elapsed: float) -> None:
        self.elapsed, self.start = elapsed, time.perf_counter()

    def now(self) -> float:
        return self.elapsed + time.perf_counter() - self.start


def run_identity(cfg: TrainConfig, inputs: FamilyInputs, data: TrainingData) -> dict[str, Any]:
    """Everything a model folder's weights depend on (checked before a folder is continued)."""
    return {
        "settings": cfg.settings(),
        "data": {k: data.info[k] for k in ("corpus", "tokens", "stream_hash", "eval_corpus")},
        "tokenizer_fingerprint": inputs.tokenizer.fingerprint,
        "vocab_size": inputs.tokenizer.vocab_size,
    }


def _prepare_folder(
    cfg: TrainConfig, inputs: FamilyInputs, data: TrainingData, store: Store, model_dir: Path, force: bool
) -> Record | None:
    """Clear (``force``) or check the model folder; the finished model's record if there is nothing to do."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if force:
        shutil.rmtree(model_dir, ignore_errors=True)
        store.delete(KIND, cfg.model_name)
    check_identity(model_dir, run_identity(cfg, inputs, data), TrainConfig().settings())
    done = store.get(KIND, cfg.model_name)
    if done is not None and (model_dir / TRAIN_CONFIG).is_file() and cfg.steps in list_checkpoints(model_dir):
        return done
    for stale in model_dir.glob(".tmp-step*") if model_dir.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)
    return None


def _write_train_config(cfg: TrainConfig, inputs: FamilyInputs, data: TrainingData, model_dir: Path, model: Any) -> None:
    tok = inputs.tokenizer
    n_params, n_params_body = count_params(model)
    model_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(model_dir / TRAIN_CONFIG, {
        "model_name": cfg.model_name,
        "tokens_per_step": cfg.tokens_per_step,
        "n_params": n_params,
        "n_params_non_embedding": n_params_body,
        "head": cfg.head,
        **head_cost(model),
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.layers,
        "num_heads": cfg.heads,
        "arch": cfg.arch,
        "vocab_size": tok.vocab_size,
        "checkpoint_steps": checkpoint_steps(cfg.steps, cfg.checkpoint_every),
        "data": data.info,
        "tokenizer": tok.name,
        "lmsat_version": __version__,
        "identity": run_identity(cfg, inputs, data),
    })
def _record_inputs(cfg: TrainConfig, inputs: FamilyInputs, data: TrainingData, device: str) -> dict[str, Any]:
    return {
        "model": cfg.model_name,
        **cfg.settings(),
        "device": device,
        "tokens_per_step": cfg.tokens_per_step,
        "data": data.info,
        "tokenizer": inputs.tokenizer.name,
        "tokenizer_fingerprint": inputs.tokenizer.fingerprint,
        "lmsat_version": __version__,
    }


def _record_results(
    cfg: TrainConfig, model_dir: Path, n_params: int, n_params_body: int, wall: float, head: dict[str, int] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Scalars and per-checkpoint arrays of a finished model, from its metrics.jsonl."""
    rows = read_metrics(model_dir)
    evals = {r["step"]: r for r in rows if "eval_loss" in r}
    trains = [r for r in rows if "train_loss" in r]
    steps = np.array(sorted(evals), dtype=np.int64)
    eval_loss = np.array([evals[s]["eval_loss"] for s in steps])
    point = best_final_rise(steps, eval_loss)  # the one best/final/rise function (docs/methods.md §5)
    final = evals[int(steps[-1])]
    tail = trains[-max(1, len(trains) // 10):]
    results: dict[str, Any] = {
        "model_dir": str(model_dir),
        "hidden_size": cfg.hidden_size,
        "n_params": n_params,
        "n_params_non_embedding": n_params_body,
        "head": cfg.head,
        **(head or {}),
        "steps": cfg.steps,
        "tokens": cfg.steps * cfg.tokens_per_step,
        "checkpoints": [f"step{s}" for s in steps],
        "final_train_loss": float(np.mean([r["train_loss"] for r in tail])) if tail else None,
        "final_eval_loss": point["final_loss"],
        "best_eval_loss": point["best_loss"],
        "best_step": point["best_step"],
        "relative_rise": point["relative_rise"],
        "reference_entropy": final.get("reference_entropy"),
        "final_gap": final.get("gap"),
        "final_gap_standard_error": final.get("gap_standard_error"),
        "best_gap": min((evals[s]["gap"] for s in steps if evals[s].get("gap") is not None), default=None),
        "final_last_layer_anisotropy": final.get("last_layer_anisotropy"),
        "final_head_singular_entropy": final.get("head_singular_entropy"),
        "final_head_effective_rank": final.get("head_effective_rank"),
        "wall_seconds": wall,
        "tokens_per_second": cfg.steps * cfg.tokens_per_step / wall if wall > 0 else None,
    }
    arrays = {
        "checkpoint_steps": steps,
        "eval_loss": eval_loss,
        "gap": np.array([np.nan if evals[s].get("gap") is None else evals[s]["gap"] for s in steps]),
        "last_layer_anisotropy": np.array([evals[s]["last_layer_anisotropy"] for s in steps]),
        "head_singular_values": np.array([evals[s]["head_singular_values"] for s in steps]),
        # measured at each checkpoint (metrics.jsonl), stored so figures never recompute it (schema lmsat.train/2)
        "head_effective_rank": np.array([evals[s]["head_effective_rank"] for s in steps]),
    }
    return results, arrays


def train_family(
    data: str | Path | CorpusSpec,
    tokenizer: str | Path | TextTokenizer,
    output: str | Path,
    hidden_sizes: Sequence[int],
    config: TrainConfig = TrainConfig(),
    eval_data: str | Path | CorpusSpec | None = None,
    force: bool = False,
    seeds: Sequence[int] | None = None,
    executor: Any = None,
    resources: Any = None,
) -> list[Record]:
    """Train one model per hidden size in ``hidden_sizes`` and seed in ``seeds`` (default: ``config.seed``
    alone); all other settings from ``config``. Seeds are the outer loop, so a stopped run has whole seeds.

    ``executor`` (``lmsat train --ray``: an ``lmsat.executor`` executor, with ``resources`` per
    task): every model is one task of it (:func:`train_models_on`); None trains them here in order.

    ``data``/``eval_data``: anything ``--data`` accepts (file, folder, glob, ``hf:NAME``) or a
    :class:`CorpusSpec`; ``tokenizer``: a Hugging Face tokenizer folder or id. Every input is
    checked before anything is written. Finished models are skipped, interrupted ones resume.
    Returns the ``train`` records, in the order of ``hidden_sizes``.
    """
    if not hidden_sizes:
        raise UserError("--hidden-sizes is empty; give at least one hidden size, e.g. 16,32,64,128.")
    configs = [replace(config, hidden_size=int(d), seed=int(s)) for s in (seeds or [config.seed]) for d in hidden_sizes]
    for cfg in configs:
        cfg.validate()
    from lmsat.loading.models import resolve_device

    resolve_device(config.device)
    inputs = resolve_inputs(data, tokenizer, eval_data)
    prepared = prepare_data(inputs.corpus, inputs.tokenizer, config.seq_len, config.eval_tokens, inputs.eval_corpus,
                            max_tokens=config.max_tokens)
    if executor is not None:
        return train_models_on(executor, configs, inputs, prepared, output, force=force, resources=resources)
    return [train_model(cfg, inputs, prepared, output, force=force) for cfg in configs]


def train_models_on(executor: Any, configs: Sequence[TrainConfig], inputs: FamilyInputs, data: TrainingData,
                    output: str | Path, force: bool = False, resources: Any = None) -> list[Record]:
    """Every model of ``configs`` as one task of ``executor`` (``lmsat.executor``: ``share`` and ``map``); records in config order.

    Each task runs :func:`train_model`, exactly as a local run does: it writes its model's folder
    and ``train`` record itself (atomically), so OUTPUT must be a path every worker sees (one
    node, or a shared filesystem: docs/distributed.md). The token data is put once into the
    object store. A killed task is retried by the executor and resumes from its newest
    checkpoint; a re-run (with or without ``--ray``) skips finished models and resumes the others.
    """
    from lmsat.progress import track

    shared = executor.share(data)
    args = [(cfg, inputs, shared, str(output), force) for cfg in configs]
    records: list[Record | None] = [None] * len(configs)
    lost: list[str] = []
    options = {} if resources is None else {"resources": resources}
    for done in track(executor.map(train_model, args, **options), "train (Ray)", total=len(args), unit="models"):
        if done.value is None:
            done.reraise_user_error()  # a model folder trained with other settings, found by the task
            lost.append(f"{configs[done.index].model_name} ({done.error})")
            continue
        records[done.index] = done.value
    if lost:
        raise UserError(f"not trained: {'; '.join(lost)[:600]}; the other models are stored; re-run the same command to resume.")
    return [r for r in records if r is not None]
