"""``lmsat sweep --ray``: every (model, revision) is one task of an executor (lmsat.executor).

Records are returned to the driver, which alone writes the run directory: the
same keys, inputs and results as :func:`lmsat.experiments.sweep.run_sweep`,
written with the same atomic ``Store.put``, one at a time as tasks finish. The run
directory therefore needs no shared filesystem (docs/distributed.md); only the
checkpoints must be readable by the workers (hub ids are downloaded on the
worker; local folders must be on a path every node sees).

What a worker does (:func:`measure_unit`): snapshot which hub commits its node
already caches, load and hash the checkpoint, measure it on the shared token
sample (put once into the object store), delete the download it made, return
``(results, arrays)``. A checkpoint that fails for a reason of its own (cannot be
loaded, NaN loss) comes back as a ``failed`` result, exactly as in a local sweep;
a worker that dies is retried by Ray, and a checkpoint whose every attempt killed
its worker is recorded as failed with that reason (``--retry-failed`` tries again).

Duplicate weights: tasks finish in any order; records are written with the one
rule of local sweeps (:func:`lmsat.experiments.sweep.write_record`: the lowest
(step, key) record with the same ``weights_hash`` is the original, records written
before it arrived are re-pointed), so the flags equal a local sweep's.

Resuming: a killed driver loses at most the tasks in flight; every written record
is a plain sweep record, so ``lmsat sweep`` with or without ``--ray`` skips them.
Each unit is claimed (``Store.claim``) while in flight, so a second driver on the
same run directory leaves it alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmsat.executor import ONE_CPU, Executor, Resources, task_resources
from lmsat.experiments.sweep import (
    KIND,
    SweepPlan,
    SweepSettings,
    SweepSummary,
    _attempt,
    _evict,
    _hash_index,
    checkpoint_results,
    load_checkpoint,
    normalise_duplicates,
    sweep_inputs,
    todo_checkpoints,
    token_samples,
    write_record,
)
from lmsat.loading.checkpoints import Checkpoint, hub_cached_commits
from lmsat.loading.corpus import CorpusSpec
from lmsat.loading.tokens import TokenSample
from lmsat.progress import track
from lmsat.store import Store

Unit = tuple[dict[str, Any], dict[str, np.ndarray] | None]


@dataclass(frozen=True)
class SweepUnit:
    """One checkpoint as a task: what to load, where, and whether to delete its download afterwards."""

    ckpt: Checkpoint
    n_params: int | None
    device: str
    evict: bool


def measure_unit(unit: SweepUnit, sample: TokenSample, settings: SweepSettings) -> Unit:
    """Load, hash and measure one checkpoint on this worker; (results, arrays) as a local sweep stores them."""
    keep = hub_cached_commits(unit.ckpt.model) if unit.evict else set()
    outcome = _attempt(lambda c: load_checkpoint(c, settings, unit.device), unit.ckpt)
    results, arrays = checkpoint_results(outcome, unit.n_params, sample, settings, unit.ckpt.key)
    del outcome
    if unit.evict:
        try:
            _evict(unit.ckpt.model, unit.ckpt.revision, keep)
        except Exception:  # a cache that cannot be cleaned does not change the measurement
            pass
    if unit.device == "cuda":
        import torch

        torch.cuda.empty_cache()
    return results, arrays


def default_resources(executor: Executor, device: str, gpus_per_task: float | None, cpus_per_task: float) -> Resources:
    """``--gpus-per-task`` (default: 1 when the device is CUDA) and ``--cpus-per-task`` (:func:`lmsat.executor.task_resources`)."""
    return task_resources(executor, device, gpus_per_task, cpus_per_task)


def ray_device(executor: Executor, device: str) -> str:
    """The device the workers use: ``auto`` -> cuda when the cluster has GPUs, else cpu."""
    return "cuda" if device == "auto" and getattr(executor, "cluster_gpus", lambda: 0.0)() > 0 else ("cpu" if device == "auto" else device)


def run_sweep_distributed(
    plan: SweepPlan,
    corpus: CorpusSpec,
    output: str | Path,
    settings: SweepSettings,
    executor: Executor,
    resources: Resources = ONE_CPU,
    say: Callable[[str], None] | None = None,
    measure: Callable[[SweepUnit, TokenSample, SweepSettings], Unit] | None = None,
) -> SweepSummary:
    """Measure every checkpoint of ``plan`` not yet stored as executor tasks; the driver writes each record.

    ``measure`` (default :func:`measure_unit`) is what each task runs.
    """
    measure = measure or measure_unit
    store = Store(output)
    t_start = time.perf_counter()
    samples = token_samples(plan, corpus, output, settings)
    todo, skipped = todo_checkpoints(store, plan.models, settings.retry_failed)
    summary = SweepSummary(total=skipped + len(todo), skipped=skipped)
    index = _hash_index(store)
    evict = not settings.keep_downloads

    with ExitStack() as claims:
        held: dict[str, ExitStack] = {}
        jobs = []
        for m, ckpt in todo:
            stack = ExitStack()
            if not stack.enter_context(store.claim(KIND, ckpt.key)):
                stack.close()
                summary.total -= 1
                if say:
                    say(f"skipped: {ckpt.key} is being measured by another process")
                continue
            claims.push(stack.__exit__)
            held[ckpt.key] = stack
            jobs.append((m, ckpt))
        shared: dict[str, Any] = {}  # tokenizer fingerprint -> the sample in the object store
        args = []
        for m, ckpt in jobs:
            fp = plan.tokenizers[m.model].fingerprint
            if fp not in shared:
                shared[fp] = executor.share(samples[m.model])
            unit = SweepUnit(ckpt=ckpt, n_params=plan.n_params[m.model], device=plan.device, evict=evict and m.source == "hub")
            args.append((unit, shared[fp], settings))

        for done in track(executor.map(measure, args, resources), "sweep (Ray)", total=len(jobs), unit="checkpoints"):
            m, ckpt = jobs[done.index]
            if done.value is None:
                # the cluster lost the task on every try (dead workers, a lost node): nothing is known
                # about the checkpoint, so no record is written and the next run measures it again
                held.pop(ckpt.key).close()
                summary.failed.append(ckpt.key)
                if say:
                    say(f"not measured: {ckpt.key}: {(done.error or 'the task gave no result')[:300]} (re-run to retry)")
                continue
            results, arrays = done.value
            results["wall_time_s"] = round(float(results["wall_time_s"] or 0.0), 4)
            inputs = sweep_inputs(ckpt, settings, plan.device, samples[m.model], plan.tokens_per_step[m.model])
            write_record(store, index, summary, ckpt, inputs, results, arrays, say)
            held.pop(ckpt.key).close()
    normalise_duplicates(store, summary, say)
    summary.wall_time_s = time.perf_counter() - t_start
    return summary
