"""Where independent units of a grid run: in this process, or as Ray tasks on a cluster.

One module for every grid command (sweep checkpoints, n-gram shards and buckets):
the command lists its units and a module-level function that computes one unit;
an :class:`Executor` runs them and yields each result as it finishes. The driver
(this process) alone writes records, so a run directory needs no shared filesystem
(docs/distributed.md).

``RayExecutor`` (``pip install lmsat[ray]``):

* each unit is one Ray task with its own CPUs/GPUs (``Resources``), in a fresh
  worker process (``max_calls=1``) so the memory of one unit is returned before the next;
* a worker that dies (killed, out of memory, node lost) is retried by Ray up to
  ``max_retries`` times; a unit whose every attempt died comes back as ``Done.error``;
* large inputs shared by every unit go once into the object store (:meth:`share`);
* workers run with ``LMSAT_PROGRESS=0``: the driver shows the one progress bar.

``LocalExecutor`` runs the same units in this process, in order (the reference).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lmsat.errors import UserError

R = TypeVar("R")

ENV_ADDRESS = "LMSAT_RAY_ADDRESS"
DEFAULT_MAX_RETRIES = 3


@dataclass(frozen=True)
class Resources:
    """What one unit reserves on a Ray node (ignored by the local executor)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_bytes: int | None = None


ONE_CPU = Resources()


@dataclass
class Done(Generic[R]):
    """One finished unit: its position in the submitted list, and its value or why it never finished."""

    index: int
    value: R | None = None
    error: str | None = None  # every attempt's worker died, or the unit raised (a bug: units return their failures)
    seconds: float = 0.0  # wall time from submission (Ray) or start (local) to the result
    exception: BaseException | None = None  # what the unit raised, when it raised (e.g. a UserError to re-raise)

    def reraise_user_error(self) -> None:
        """Raise the unit's own :class:`UserError` again on the driver (a user mistake found in the task)."""
        if isinstance(self.exception, UserError):
            raise UserError(str(self.exception)) from None


class LocalExecutor:
    """Runs units one after another in this process."""

    name = "local"

    def share(self, value: Any) -> Any:
        return value

    def map(
        self, fn: Callable[..., R], args: Sequence[tuple[Any, ...]], resources: Resources = ONE_CPU, remote_outputs: int = 0,
        fresh_workers: bool = True,
    ) -> Iterator[Done[R]]:
        """Run ``fn(*a)`` for each ``a`` in order (``remote_outputs``: see :meth:`RayExecutor.map`)."""
        for i, a in enumerate(args):
            t0 = time.perf_counter()
            try:
                value = fn(*a)
            except Exception as exc:
                yield Done(i, error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0, exception=exc)
            else:
                yield Done(i, value=value, seconds=time.perf_counter() - t0)

    def close(self) -> None:
        pass


def _in_worker(fn: Callable[..., R], *args: Any) -> R:
    """The body of every Ray task: silence worker progress bars, then compute one unit."""
    os.environ["LMSAT_PROGRESS"] = "0"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return fn(*args)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'lmsat[ray]' (or pip install ray) on the driver and on every node.") from None
    return ray


def ray_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else $LMSAT_RAY_ADDRESS, else None (start a local Ray instance)."""
    chosen = address or os.environ.get(ENV_ADDRESS) or None
    if chosen is not None and chosen.strip().lower() in ("", "local"):
        return None
    return chosen.strip() if chosen else None


class RayExecutor:
    """Runs units as Ray tasks (module docstring); joins ``address`` or an already connected Ray."""

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = DEFAULT_MAX_RETRIES, num_cpus: int | None = None) -> None:
        ray = import_ray()
        self.ray = ray
        self.max_retries = max_retries
        self._started = False
        if not ray.is_initialized():
            target = ray_address(address)
            try:
                ray.init(
                    address=target,
                    num_cpus=num_cpus if target is None else None,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=True,
                    logging_level="warning",
                )
            except ConnectionError as exc:
                raise UserError(f"cannot reach the Ray cluster at '{target}': {exc}; start it with `ray start --head` or check --ray-address / ${ENV_ADDRESS}.") from None
            self._started = True

    def cluster_gpus(self) -> float:
        return float(self.ray.cluster_resources().get("GPU", 0.0))

    def cluster_cpus(self) -> float:
        return float(self.ray.cluster_resources().get("CPU", 0.0))

    def share(self, value: Any) -> Any:
        """Put ``value`` once into the object store; pass the returned reference as a unit argument."""
        return self.ray.put(value)

    def map(
        self, fn: Callable[..., R], args: Sequence[tuple[Any, ...]], resources: Resources = ONE_CPU, remote_outputs: int = 0,
        fresh_workers: bool = True,
    ) -> Iterator[Done[R]]:
        """Submit every unit, then yield each as it finishes (any order; ``Done.index`` says which).

        With ``remote_outputs`` = k > 0, ``fn`` returns a tuple of k + 1 values: the first k
        stay in the object store (``Done.value`` holds their references, to pass as
        arguments of later tasks without a trip through the driver), the last one is fetched.
        ``fresh_workers=False`` lets a worker run several units (units that hold no model: n-gram shards).
        """
        ray = self.ray
        options: dict[str, Any] = {
            "num_cpus": resources.cpus,
            "num_gpus": resources.gpus,
            "max_retries": self.max_retries,  # a dead worker is retried ...
            "retry_exceptions": False,  # ... an exception is an answer (units return their own failures)
        }
        if fresh_workers:
            options["max_calls"] = 1  # a fresh worker per unit: memory of one checkpoint never leaks into the next
        if resources.memory_bytes:
            options["memory"] = resources.memory_bytes
        remote = ray.remote(**options)(_in_worker)
        if remote_outputs:
            remote = remote.options(num_returns=remote_outputs + 1)
        t0 = time.perf_counter()
        pending: dict[Any, int] = {}
        held: dict[int, list[Any]] = {}
        for i, a in enumerate(args):
            refs = remote.remote(fn, *a)
            if remote_outputs:
                held[i] = list(refs[:-1])
                refs = refs[-1]
            pending[refs] = i
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        value = ray.get(ref)
                        if remote_outputs:
                            value = (*held.pop(i), value)
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None) or exc
                        yield Done(i, error=f"{type(cause).__name__}: {' '.join(str(cause).split())[:400]}", seconds=time.perf_counter() - t0,
                                   exception=cause if isinstance(cause, BaseException) else None)
                    except ray.exceptions.RayError as exc:
                        text = " ".join(str(exc).split())[:300]
                        yield Done(i, error=f"Ray worker lost {self.max_retries + 1} time(s): {type(exc).__name__}: {text}", seconds=time.perf_counter() - t0)
                    else:
                        yield Done(i, value=value, seconds=time.perf_counter() - t0)
        finally:
            for ref in pending:  # interrupted: leave no orphan work running on the cluster
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


Executor = LocalExecutor | RayExecutor


def task_resources(executor: Executor, device: str, gpus_per_task: float | None, cpus_per_task: float) -> Resources:
    """``--gpus-per-task`` (default: 1 when the device is CUDA) and ``--cpus-per-task``, checked against the cluster."""
    if cpus_per_task <= 0:
        raise UserError(f"--cpus-per-task must be positive (got {cpus_per_task}).")
    if gpus_per_task is not None and gpus_per_task < 0:
        raise UserError(f"--gpus-per-task must be 0 or more (got {gpus_per_task}).")
    gpus = (1.0 if device == "cuda" else 0.0) if gpus_per_task is None else float(gpus_per_task)
    if device == "cuda" and gpus == 0:
        raise UserError("--device cuda with --gpus-per-task 0 would run tasks where no GPU is reserved; give --gpus-per-task 1 (or a fraction).")
    have_gpus = getattr(executor, "cluster_gpus", lambda: gpus)()
    have_cpus = getattr(executor, "cluster_cpus", lambda: cpus_per_task)()
    if gpus > have_gpus:  # the task could never be scheduled: say so instead of waiting forever
        raise UserError(f"each task asks for {gpus:g} GPU(s) but the Ray cluster has {have_gpus:g}; use --device cpu (or --gpus-per-task 0), or add GPU nodes.")
    if cpus_per_task > have_cpus:
        raise UserError(f"--cpus-per-task {cpus_per_task:g} is more than the Ray cluster's {have_cpus:g} CPUs; give at most {have_cpus:g}.")
    return Resources(cpus=float(cpus_per_task), gpus=gpus)


def task_device(executor: Executor, device: str) -> str:
    """The device the tasks use: ``auto`` -> cuda when the cluster has GPUs (Ray) or this machine has one (local)."""
    if device != "auto":
        return device
    if isinstance(executor, LocalExecutor):
        from lmsat.loading.models import resolve_device

        return resolve_device(device)
    return "cuda" if executor.cluster_gpus() > 0 else "cpu"


def make_executor(use_ray: bool, address: str | None = None) -> Executor:
    """The executor a command asked for (``--ray``/``--ray-address``)."""
    return RayExecutor(address) if use_ray or address else LocalExecutor()
