"""The user-error contract, shared by every test of bad input (one helper instead of a copy per file).

A user mistake gives exactly one line ``lmsat: error: <what is wrong; what to do>`` on stderr,
exit code 2, no traceback, and writes nothing: no file appears, and no existing file changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.conftest import files_under


def snapshot(*paths: Path) -> dict[Path, bytes]:
    """Every file below ``paths`` with its bytes: compare before and after a refused command."""
    return {p: p.read_bytes() for root in paths for p in files_under(root)}


def assert_user_error(result: Any, out: Path | Iterable[Path] | None = None, *fragments: str,
                      before: dict[Path, bytes] | None = None) -> str:
    """``result`` (the ``cli`` fixture's) is a refused command: exit 2, one ``lmsat: error:`` line holding every
    fragment, no traceback; nothing written under ``out`` (a folder or several): with ``before`` (a
    :func:`snapshot` taken before the command) the files there are exactly as they were, else there are none.

    Returns the error line.
    """
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 2, (result.code, result.stdout[-2000:], result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("lmsat: error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    roots = [] if out is None else [Path(out)] if isinstance(out, (str, Path)) else [Path(p) for p in out]
    if before is not None:
        assert snapshot(*roots) == before, "a refused command changed files"
    else:
        for root in roots:
            assert files_under(root) == [], f"a refused command wrote {files_under(root)}"
    return lines[0]
