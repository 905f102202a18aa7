"""Results store: the API between lmsat commands.

A run directory (``--output DIR``) holds one folder per kind of measurement::

    DIR/
      <kind>/                   anisotropy, head, sweep, rank_probe, ngram, ...
        <key>.json              one record per finished unit of work
        <key>.npz               its arrays (optional), written before the json
      tokens/<hash>.npz         token samples shared by every model of a tokenizer
      figures/*.png, *.csv      derived views, rebuilt from the records

A record is a JSON object::

    {"schema": "lmsat.<kind>/<version>", "kind": ..., "key": ...,
     "lmsat_version": ..., "created": ISO-8601,
     "inputs": {...exact inputs...}, "results": {...}, "arrays": [names]}

Every file is written atomically (temporary file + ``os.replace``) and the
record's json is written last, so a record exists only once its unit of work
is complete: a crash at any point loses at most the unit in progress, and a
re-run skips every key already present. Records read with pandas through
:meth:`Store.table`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from lmsat import __version__

SCHEMA_VERSION = 1
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; rename it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results should be readable like any file
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def atomic_save_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def atomic_savefig(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format taken from the suffix)."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip(".") or "png", **kwargs)


def atomic_write_csv(path: str | os.PathLike[str], frame: Any) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_open(path, "w") as fh:
        frame.to_csv(fh, index=False)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and paths to JSON types; NaN/inf become None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def slugify(text: str) -> str:
    """A file-name-safe key: ``EthicalAI/pythia-70m@step1000`` -> ``EthicalAI--pythia-70m@step1000``."""
    text = text.replace("/", "--").replace("\\", "--")
    return re.sub(r"[^A-Za-z0-9._@=+-]+", "_", text).strip("._") or "_"


def fingerprint(obj: Any, length: int = 16) -> str:
    """Short sha256 of a JSON-serialisable object (stable across runs)."""
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Record:
    """One finished unit of work, as stored."""

    kind: str
    key: str
    inputs: dict[str, Any]
    results: dict[str, Any]
    schema: str = ""
    lmsat_version: str = __version__
    created: str = field(default_factory=now_iso)
    arrays: list[str] = field(default_factory=list)
    path: Path | None = None

    def load_arrays(self) -> dict[str, np.ndarray]:
        """The record's arrays (empty dict if it has none)."""
        if not self.arrays or self.path is None:
            return {}
        with np.load(self.path.with_suffix(".npz")) as data:
            return {name: data[name] for name in data.files}


class Store:
    """A run directory of atomic records (see module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def kind_dir(self, kind: str) -> Path:
        return self.root / kind

    def _json_path(self, kind: str, key: str) -> Path:
        return self.kind_dir(kind) / f"{slugify(key)}.json"

    def has(self, kind: str, key: str) -> bool:
        return self._json_path(kind, key).exists()

    def put(
        self,
        kind: str,
        key: str,
        inputs: dict[str, Any],
        results: dict[str, Any],
        arrays: dict[str, np.ndarray] | None = None,
        schema_version: int = SCHEMA_VERSION,
    ) -> Record:
        """Write one record atomically: arrays first, the json (the commit marker) last."""
        json_path = self._json_path(kind, key)
        names = sorted(arrays) if arrays else []
        if arrays:
            atomic_save_npz(json_path.with_suffix(".npz"), **{k: np.asarray(v) for k, v in arrays.items()})
        record = Record(
            kind=kind,
            key=key,
            inputs=inputs,
            results=results,
            schema=f"lmsat.{kind}/{schema_version}",
            arrays=names,
            path=json_path,
        )
        atomic_write_json(
            json_path,
            {
                "schema": record.schema,
                "kind": kind,
                "key": key,
                "lmsat_version": record.lmsat_version,
                "created": record.created,
                "inputs": inputs,
                "results": results,
                "arrays": names,
            },
        )
        return record

    def delete(self, kind: str, key: str) -> None:
        json_path = self._json_path(kind, key)
        for p in (json_path, json_path.with_suffix(".npz")):
            p.unlink(missing_ok=True)

    def get(self, kind: str, key: str) -> Record | None:
        path = self._json_path(kind, key)
        return _read_record(path) if path.exists() else None

    def records(self, kind: str, where: Callable[[Record], bool] | None = None) -> list[Record]:
        """All records of ``kind``, sorted by key."""
        folder = self.kind_dir(kind)
        if not folder.is_dir():
            return []
        out = [_read_record(p) for p in sorted(folder.glob("*.json"))]
        return [r for r in out if where is None or where(r)]

    def kinds(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*.json")))

    def table(self, kind: str) -> Any:
        """Records of ``kind`` as a pandas DataFrame: key, flattened inputs and scalar results."""
        import pandas as pd

        rows = []
        for rec in self.records(kind):
            row: dict[str, Any] = {"key": rec.key}
            row.update({f"inputs.{k}": v for k, v in _flatten(rec.inputs).items()})
            row.update(_flatten(rec.results))
            rows.append(row)
        return pd.DataFrame(rows)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, prefix=f"{name}."))
        elif not isinstance(v, list):
            out[name] = v
    return out


def _read_record(path: Path) -> Record:
    with open(path) as fh:
        raw = json.load(fh)
    return Record(
        kind=raw["kind"],
        key=raw["key"],
        inputs=raw.get("inputs", {}),
        results=raw.get("results", {}),
        schema=raw.get("schema", ""),
        lmsat_version=raw.get("lmsat_version", ""),
        created=raw.get("created", ""),
        arrays=raw.get("arrays", []),
        path=path,
    )
