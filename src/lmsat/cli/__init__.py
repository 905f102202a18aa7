"""The `lmsat` command line. Each command module registers itself on :data:`app`."""

from __future__ import annotations

import os
import sys

from lmsat.cli.app import app
from lmsat.errors import EXIT_USER_ERROR, UserError

# Command modules, in the order `lmsat --help` lists them.
from lmsat.cli import assets as _assets  # noqa: E402,F401
from lmsat.cli import models as _models  # noqa: E402,F401
from lmsat.cli import sweep as _sweep  # noqa: E402,F401
from lmsat.cli import rank_probe as _rank_probe  # noqa: E402,F401
from lmsat.cli import ngram as _ngram  # noqa: E402,F401
from lmsat.cli import synth as _synth  # noqa: E402,F401
from lmsat.cli import downstream as _downstream  # noqa: E402,F401
from lmsat.cli import report as _report  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`UserError` prints one line and exits with code 2."""
    # Library progress bars (GGUF de-quantizing, ...) would interleave with lmsat's own.
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        app(args=argv, prog_name="lmsat", standalone_mode=True)
    except UserError as exc:
        print(f"lmsat: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("lmsat: interrupted; finished results are kept, re-run to continue.", file=sys.stderr)
        sys.exit(130)


__all__ = ["app", "main"]
