"""Parsing of command-line values (comma lists, ranges, named numbers): one place, one wording.

Each parser turns the text of one option into a value the library takes and raises
:class:`lmsat.errors.UserError` (one line: what is wrong, what to write) for anything else.
Range checks of numbers live in :mod:`lmsat.cli.validate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lmsat.errors import UserError


def _split(text: str | Sequence[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in str(t).split(",")]
    return [p.strip() for p in items if p.strip()]


def parse_seeds(text: str | None) -> list[int] | None:
    """``"1-9"`` -> [1, ..., 9]; ``"0,1,2"``, ``"1-3,7"`` likewise (sorted, unique); None -> None.

    >>> parse_seeds("1-3,7")
    [1, 2, 3, 7]
    """
    if text is None:
        return None
    out: set[int] = set()
    for part in _split(text):
        lo, dash, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise UserError(f"--seeds must be integers or ranges such as 1-9 or 0,1,2 (got '{text}').") from None
        if a < 0 or b < a:
            raise UserError(f"--seeds range '{part}' is empty or negative; write it low-high, e.g. 1-9.")
        out.update(range(a, b + 1))
    if not out:
        raise UserError(f"--seeds is empty; give seeds such as 1-9 (got '{text}').")
    return sorted(out)


def parse_hidden_sizes(text: str) -> list[int]:
    """``"16,32,64"`` -> [16, 32, 64]; a clear error for anything else."""
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise UserError(f"--hidden-sizes must be comma-separated integers such as 16,32,64,128 (got '{text}').") from None
    if not sizes or any(d < 1 for d in sizes):
        raise UserError(f"--hidden-sizes must be positive integers such as 16,32,64,128 (got '{text}').")
    if len(set(sizes)) != len(sizes):
        raise UserError(f"--hidden-sizes repeats a size (got '{text}').")
    return sizes


def parse_ranks(text: str) -> list[int]:
    """``"8,16,32"`` -> [8, 16, 32] (sorted, unique); a clear error for anything else."""
    ranks = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            ranks.append(int(part))
        except ValueError:
            raise UserError(f"--ranks must be comma-separated integers such as 8,16,32,64 (got '{text}').") from None
    if not ranks:
        raise UserError("--ranks is empty; give ranks such as 8,16,32,64.")
    return sorted(set(ranks))


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """``"1e-3,3e-3"`` -> (0.001, 0.003): finite numbers, at least one; a clear error for anything else."""
    try:
        values = tuple(float(p) for p in str(text).replace(" ", "").split(",") if p)
    except ValueError:
        values = (math.nan,)
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(f"{option} must be comma-separated numbers such as 1e-3,3e-3,1e-2 (got '{text}').")
    return values


def parse_limit(text: str | None) -> int | float | None:
    """``--limit``: a whole number of documents per task, or a fraction in (0, 1) (the harness's convention)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--limit must be a number of documents (e.g. 100) or a fraction below 1 (e.g. 0.1); got '{text}'.") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"--limit must be positive (got {text}).")
    if value >= 1:
        if value != int(value):
            raise UserError(f"--limit above 1 is a number of documents and must be whole (got {text}).")
        return int(value)
    return value


def parse_named_ints(values: list[str] | None, option: str) -> dict[str, int]:
    """``["N"]`` -> {"*": N} (every model); ``["name=N", ...]`` -> {name: N}. N may be written 2_097_152 or 1.4e9."""
    out: dict[str, int] = {}
    for raw in values or []:
        for item in (p.strip() for p in raw.split(",") if p.strip()):
            name, _, number = item.rpartition("=")
            text = number.replace("_", "")
            try:
                value = float(text)
            except ValueError:
                value = float("nan")
            if not (math.isfinite(value) and value > 0 and value == int(value)):
                raise UserError(f"{option} '{item}': give a positive whole number, as N or MODEL=N (e.g. pythia-70m=70426624).")
            out[name.strip() or "*"] = int(value)
    return out
