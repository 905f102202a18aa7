"""The `lmsat` command line. Each command module registers itself on :data:`app`."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from lmsat.cli.app import app
from lmsat.errors import EXIT_USER_ERROR, UserError

# Command modules, in the order `lmsat --help` lists them.
from lmsat.cli import assets as _assets  # noqa: E402,F401
from lmsat.cli import models as _models  # noqa: E402,F401
from lmsat.cli import diagnose as _diagnose  # noqa: E402,F401
from lmsat.cli import sweep as _sweep  # noqa: E402,F401
from lmsat.cli import causality as _causality  # noqa: E402,F401
from lmsat.cli import rank_probe as _rank_probe  # noqa: E402,F401
from lmsat.cli import ngram as _ngram  # noqa: E402,F401
from lmsat.cli import synth as _synth  # noqa: E402,F401
from lmsat.cli import downstream as _downstream  # noqa: E402,F401
from lmsat.cli import report as _report  # noqa: E402,F401


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) during a command; raised by lmsat's own handler so typer cannot swallow it."""


INTERRUPTED = "interrupted; finished results are kept: run the same command again to resume."


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _version(value: bool) -> None:
    if value:
        from lmsat import __version__

        print(f"lmsat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print lmsat's version and exit.")] = False,
) -> None:
    """lmsat: why does a small language model stop improving? Start with `lmsat demo`, or `lmsat diagnose MODEL --data CORPUS`."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: every user mistake prints one line ``lmsat: error: ...`` and exits with code 2.

    That covers :class:`UserError` and typer/click usage errors (unknown option, a value that is
    not a number, a missing argument). Ctrl-C prints one line saying the run can be resumed and
    exits with code 130; programming errors keep their traceback.
    """
    import signal
    import threading

    import typer

    try:  # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click import exceptions as click_errors

    # Library progress bars (GGUF de-quantizing, ...) would interleave with lmsat's own.
    os.environ.setdefault("TQDM_DISABLE", "1")
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        code = app(args=argv, prog_name="lmsat", standalone_mode=False)
    except UserError as exc:
        print(f"lmsat: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except click_errors.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(EXIT_USER_ERROR)
    except click_errors.UsageError as exc:
        where = f"lmsat {exc.ctx.command_path.split(' ', 1)[1]}" if exc.ctx and " " in exc.ctx.command_path else "lmsat"
        print(f"lmsat: error: {_one_line(exc.format_message()).rstrip('.')}; see '{where} --help'.", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except click_errors.ClickException as exc:
        print(f"lmsat: error: {_one_line(exc.format_message())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (Interrupted, KeyboardInterrupt, typer.Abort):
        print(f"lmsat: error: {INTERRUPTED}", file=sys.stderr)
        sys.exit(130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if isinstance(code, int) and code:
        sys.exit(code)


__all__ = ["app", "main"]
