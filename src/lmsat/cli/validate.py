"""Validation every command runs before it does any work: one wording, one set of bounds.

Each check raises :class:`~lmsat.errors.UserError` (the CLI prints one line,
``lmsat: error: ...``, and exits with code 2). Commands call them at the top of
their body, the output path first, so a bad input leaves no file behind:

* :func:`check_output_dir` / :func:`check_output_file`: the output is not an
  existing file (or a file inside one), its folder can be written (not
  read-only, not immutable, not permission-denied);
* :func:`check_range`: one range checker for every number (``--tokens must be
  >= 1 (got 0)``, ``--warmup must be in [0, 1) (got 2)``);
* :func:`check_choice`, :func:`check_device`, :func:`check_dtype`;
* :func:`check_seq_len_fits`: ``--seq-len`` against each model's context
  (GPT-2's ``n_positions``, ``max_position_embeddings`` of rotary models).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lmsat.errors import UserError

SEED_MAX = 2**32 - 1
_BRACKETS = {"both": "[]", "left": "[)", "right": "(]", "neither": "()"}


def _num(x: Any) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    inclusive: str = "both",
    hint: str | None = None,
) -> Any:
    """Return ``value`` if ``low <= value <= high`` (ends as ``inclusive`` says), else raise one line.

    ``inclusive``: ``both``, ``left`` (low included), ``right`` (high included) or
    ``neither``; a missing bound is unbounded. ``None`` passes (an option left
    unset). NaN and infinities always fail. Wording, e.g.
    ``--batch-size must be >= 1 (got 0); <hint>`` or ``--warmup must be in [0, 1) (got 2)``.
    """
    if value is None:
        return value
    if inclusive not in _BRACKETS:
        raise ValueError(f"inclusive must be one of {', '.join(_BRACKETS)}")
    lo_in = inclusive in ("both", "left")
    hi_in = inclusive in ("both", "right")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low if lo_in else value > low
    if ok and high is not None:
        ok = value <= high if hi_in else value < high
    if ok:
        return value
    if low is not None and high is not None:
        left, right = _BRACKETS[inclusive]
        want = f"in {left}{_num(low)}, {_num(high)}{right}"
    elif low is not None:
        want = f"{'>=' if lo_in else '>'} {_num(low)}"
    elif high is not None:
        want = f"{'<=' if hi_in else '<'} {_num(high)}"
    else:
        want = "a finite number"
    message = f"{name} must be {want} (got {_num(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)})"
    raise UserError(message + (f"; {hint}." if hint else "."))


def check_seed(name: str, value: int | None) -> int | None:
    """A seed: a whole number in [0, 2^32 - 1] (numpy's and torch's common range)."""
    return check_range(name, value, 0, SEED_MAX)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else ``NAME must be one of a, b (got 'x').``"""
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)} (got '{value}').")
    return value


def check_device(device: str) -> str:
    """The resolved device (cpu/cuda); an unknown name or a missing GPU is refused."""
    from lmsat.device import resolve_device

    return resolve_device(device)


def check_dtype(dtype: str) -> str:
    from lmsat.loading.models import DTYPES

    return check_choice("--dtype", dtype, DTYPES)


def _writable_problem(folder: Path) -> str | None:
    """Why ``folder`` (an existing directory) cannot be written, or None."""
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"'{folder}' is on a read-only filesystem"
    except OSError:
        pass
    return f"'{folder}' cannot be written (permission denied, or the folder is immutable)"


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and not p.is_symlink():
        if p.parent == p:
            break
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike[str], option: str = "--output") -> Path:
    """Refuse an output folder that is a file, sits under a file, or cannot be written; nothing is created."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} '{path}' is an existing file, not a folder; give a folder (a run directory) for the results.")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"{option} '{path}' cannot be created: '{base}' is a file; give a folder path.")
    problem = _writable_problem(base)
    if problem:
        raise UserError(f"{option} '{path}': {problem}; choose a folder you can write to.")
    return path


def check_output_file(path: str | os.PathLike[str], option: str = "--output") -> Path:
    """Refuse an output file that is a folder, cannot be overwritten, or whose folder cannot be created or written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{option} '{path}' is a folder; give a file name.")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} '{path}' exists and cannot be overwritten; choose another file name.")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise UserError(f"{option} '{path}' cannot be created: '{base}' is a file; give a path in a folder.")
    problem = _writable_problem(base)
    if problem:
        raise UserError(f"{option} '{path}': {problem}; choose a folder you can write to.")
    return path


def check_input_dir(path: str | os.PathLike[str], what: str) -> Path:
    """An existing folder (a run directory to read)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{what} '{path}' does not exist.")
    if not path.is_dir():
        raise UserError(f"{what} '{path}' is a file, not a folder.")
    return path


def max_positions(config: Any) -> int | None:
    """The longest sequence a model was built for: ``n_positions`` (GPT-2) or ``max_position_embeddings``."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    text_config = getattr(config, "text_config", None)
    return max_positions(text_config) if text_config is not None else None


def check_seq_len_fits(specs: Iterable[Any], seq_len: int, option: str = "--seq-len") -> None:
    """Refuse a ``seq_len`` longer than any model's context (loads each config only)."""
    from lmsat.loading.models import load_config

    for spec in specs:
        limit = max_positions(load_config(spec))
        if limit is not None and seq_len > limit:
            raise UserError(
                f"{option} {seq_len} is longer than the context of '{spec.label}' ({limit} tokens); use {option} {limit} or less."
            )
