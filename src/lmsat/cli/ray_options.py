"""``--ray``, ``--ray-address``, ``--gpus-per-task``, ``--cpus-per-task``: the same spelling in every grid command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from lmsat.cli.show import say
from lmsat.errors import UserError

PANEL = "Cluster (Ray)"

UseRay = Annotated[
    bool,
    typer.Option(
        "--ray",
        help="Run the units as Ray tasks: on the cluster of --ray-address / $LMSAT_RAY_ADDRESS, else on a local Ray instance "
        "(pip install 'lmsat\\[ray]'; docs/distributed.md).",
        rich_help_panel=PANEL,
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to join (host:6379, ray://host:10001, or auto); implies --ray. Default: $LMSAT_RAY_ADDRESS.",
        show_default=False,
        rich_help_panel=PANEL,
    ),
]
GpusPerTask = Annotated[
    float | None,
    typer.Option("--gpus-per-task", help="GPUs reserved per Ray task (default: 1 when the device is cuda, else 0).", show_default=False, rich_help_panel=PANEL),
]
CpusPerTask = Annotated[float, typer.Option("--cpus-per-task", help="CPUs reserved per Ray task (Ray sets its OMP_NUM_THREADS to this).", rich_help_panel=PANEL)]


@contextmanager
def grid_executor(use_ray: bool, address: str | None, device: str, gpus_per_task: float | None, cpus_per_task: float,
                  what: str) -> Iterator[tuple[Any, Any]]:
    """(executor, resources) for a grid command's ``--ray`` options, or (None, None) without them; the executor closed on exit.

    Checked before anything runs: positive CPUs per task, and GPUs the cluster has (``--device auto``
    reserves one GPU per task when the cluster has GPUs).
    """
    if not (use_ray or address):
        if gpus_per_task is not None or cpus_per_task != 1.0:
            raise UserError("--gpus-per-task and --cpus-per-task apply to Ray tasks; add --ray (or --ray-address).")
        yield None, None
        return
    from lmsat.executor import RayExecutor, import_ray, task_device, task_resources

    if cpus_per_task <= 0 or (gpus_per_task is not None and gpus_per_task < 0):
        raise UserError(f"--cpus-per-task must be positive and --gpus-per-task 0 or more (got {cpus_per_task:g}, {gpus_per_task}).")
    import_ray()
    executor = RayExecutor(address)
    try:
        resources = task_resources(executor, task_device(executor, device), gpus_per_task, cpus_per_task)
        say(f"{what} on Ray ({executor.cluster_cpus():g} CPUs, {executor.cluster_gpus():g} GPUs in the cluster): "
            f"{resources.cpus:g} CPU / {resources.gpus:g} GPU per task")
        yield executor, resources
    finally:
        executor.close()
