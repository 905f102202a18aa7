"""``--ray``, ``--ray-address``, ``--gpus-per-task``, ``--cpus-per-task``: the same spelling in every grid command."""

from __future__ import annotations

from typing import Annotated

import typer

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
