"""Results store: the API between lmsat commands.

A run directory (``--output DIR``) holds one folder per kind of measurement::

    DIR/
      <kind>/                   anisotropy, head, sweep, rank_probe, ngram, ...
        <slug>-<hash>.json      one record per finished unit of work
        <slug>-<hash>.npz       its arrays (optional), written before the json
        .claims/<name>.lock     a unit some live process is working on (see Store.claim)
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

Identity. A record's file name is a readable slug of its key plus the first 12
hex digits of sha256(key), so two keys that slugify alike (``a b`` and ``a_b``)
get two files; every read checks the key and kind stored inside the file.
Files named by the slug alone (lmsat 0.1 run directories) are still read, and
only when the key stored in them is the exact key asked for.

Corruption. A record whose json cannot be parsed, is not a record, or whose
``.npz`` is missing or truncated is moved aside (``<file>.corrupt``) with one
warning line and treated as absent, so the unit of work is redone; a good
record is never touched.
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
from lmsat.errors import UserError

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


_SLUG_MAX = 96


def record_name(key: str) -> str:
    """File stem of a record: readable slug (at most 96 characters) + ``-`` + 12 hex digits of sha256(key).

    Unique per exact key: ``coll/a b`` and ``coll/a_b`` share a slug but not a name.
    """
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    return f"{slugify(key)[:_SLUG_MAX]}-{digest}"


def warn(message: str) -> None:
    """One warning line on stderr: ``lmsat: warning: ...``."""
    import sys

    print("lmsat: warning: " + " ".join(str(message).split()), file=sys.stderr, flush=True)


class CorruptRecord(UserError):
    """A stored file of a run directory is damaged and cannot be recomputed in place."""


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
        npz = self.path.with_suffix(".npz")
        try:
            with np.load(npz) as data:
                return {name: data[name] for name in data.files}
        except Exception as exc:  # missing, truncated, bad CRC: all mean the same to the user
            raise CorruptRecord(
                f"the arrays of record '{self.key}' ({npz}) cannot be read ({type(exc).__name__}); "
                f"delete {self.path} and re-run the same command to recompute it."
            ) from None


class Store:
    """A run directory of atomic records (see module docstring)."""

    def __init__(self, root: str | os.PathLike[str], readonly: bool = False) -> None:
        """``readonly``: a reader's view (report, saturation, causality, figures): a damaged record is
        skipped with one warning and left in place for the command that wrote it to redo, never moved."""
        self.root = Path(root)
        self.readonly = readonly

    def kind_dir(self, kind: str) -> Path:
        return self.root / kind

    def record_path(self, kind: str, key: str) -> Path:
        """Where the record of exactly ``key`` is (or would be) written: ``<kind>/<record_name(key)>.json``."""
        return self.kind_dir(kind) / f"{record_name(key)}.json"

    _json_path = record_path

    def _legacy_path(self, kind: str, key: str) -> Path:
        """Where lmsat 0.1 wrote the record (slug only); read only when it holds exactly ``key``."""
        return self.kind_dir(kind) / f"{slugify(key)}.json"

    def has(self, kind: str, key: str) -> bool:
        return self.get(kind, key) is not None

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
        if not arrays:
            json_path.with_suffix(".npz").unlink(missing_ok=True)
        self._drop_legacy(kind, key)
        return record

    def _drop_legacy(self, kind: str, key: str) -> None:
        """Remove an lmsat 0.1 file of the same exact key, now superseded (never another key's)."""
        legacy = self._legacy_path(kind, key)
        if legacy.exists() and legacy != self._json_path(kind, key):
            rec = self._read(legacy, kind)
            if rec is not None and rec.key == key:
                for p in (legacy, legacy.with_suffix(".npz")):
                    p.unlink(missing_ok=True)

    def delete(self, kind: str, key: str) -> None:
        for json_path in (self._json_path(kind, key), self._legacy_path(kind, key)):
            if json_path.exists():
                rec = self._read(json_path, kind)
                if rec is not None and rec.key != key:
                    continue
            for p in (json_path, json_path.with_suffix(".npz")):
                p.unlink(missing_ok=True)

    def get(self, kind: str, key: str) -> Record | None:
        """The record of exactly ``key`` (its stored key and kind checked), or None.

        A damaged record is moved aside with a warning and reported as absent (see module docstring).
        """
        for path in (self._json_path(kind, key), self._legacy_path(kind, key)):
            if path.exists():
                rec = self._read(path, kind)
                if rec is not None and rec.key == key:
                    return rec
        return None

    def records(self, kind: str, where: Callable[[Record], bool] | None = None) -> list[Record]:
        """All readable records of ``kind``, sorted by key (damaged ones moved aside with a warning)."""
        folder = self.kind_dir(kind)
        if not folder.is_dir():
            return []
        by_key: dict[str, Record] = {}
        if self.readonly:
            aside = sorted(folder.glob("*.json.corrupt"))
            if aside:
                warn(f"{len(aside)} damaged {kind} record(s) were set aside in {folder} (*.corrupt, e.g. {aside[0].name}): "
                     "their units are missing here until the command that wrote them runs again.")
        for p in sorted(folder.glob("*.json")):
            rec = self._read(p, kind)
            if rec is None:
                continue
            # a 0.1 file and its re-measured successor: the hashed name wins
            if rec.key not in by_key or p == self._json_path(kind, rec.key):
                by_key[rec.key] = rec
        out = [by_key[k] for k in sorted(by_key)]
        return [r for r in out if where is None or where(r)]

    def _read(self, path: Path, kind: str) -> Record | None:
        """Read and verify one record file; move a damaged one aside and return None."""
        try:
            rec = _read_record(path)
            problem = None
            if rec.kind != kind:
                problem = f"it holds a '{rec.kind}' record, not '{kind}'"
            elif rec.arrays:
                npz = path.with_suffix(".npz")
                if not npz.exists():
                    problem = f"its arrays file {npz.name} is missing"
                else:
                    import zipfile

                    with zipfile.ZipFile(npz) as zf:
                        names = {n.removesuffix(".npy") for n in zf.namelist()}
                    missing = sorted(set(rec.arrays) - names)
                    if missing:
                        problem = f"its arrays file {npz.name} lacks {', '.join(missing)}"
        except FileNotFoundError:
            return None
        except Exception as exc:  # truncated json, not an object, bad zip: damaged
            problem = f"it cannot be read ({type(exc).__name__})"
        if problem is None:
            return rec
        if self.readonly:
            warn(f"{path} is damaged ({problem}); skipped and left in place: run the command that wrote it again to redo it.")
            return None
        _move_aside(path, problem)
        return None

    @contextmanager
    def claim(self, kind: str, key: str) -> Iterator[bool]:
        """Claim one unit of work for this process: ``with store.claim(kind, key) as mine: ...``.

        ``mine`` is True when this process holds the unit, False when another
        process does. The claim is an exclusive ``flock`` on
        ``<kind>/.claims/<name>.lock``: the kernel drops it when its holder exits
        or is killed, so a claim can never go stale, and two processes can never
        both hold one (a lock file removed by a releasing holder between our open
        and our lock is detected by its inode, and we try again). The file holds
        the holder's pid and host for people to read. Check :meth:`has` again
        after claiming: the previous holder may have finished the unit.
        """
        lock = self.kind_dir(kind) / ".claims" / f"{record_name(key)}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _flock(lock)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                lock.unlink(missing_ok=True)  # while still locked: no one can hold this inode after us
                os.close(fd)

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


def _move_aside(path: Path, problem: str) -> None:
    """Rename a damaged record (and its arrays) to ``*.corrupt``; one warning line names it."""
    for p in (path, path.with_suffix(".npz")):
        if p.exists():
            try:
                os.replace(p, p.with_name(p.name + ".corrupt"))
            except OSError:
                pass
    warn(f"{path} is damaged ({problem}); moved it to {path.name}.corrupt and the unit will be redone.")


def _flock(lock: Path, tries: int = 3) -> int | None:
    """An fd holding an exclusive flock on ``lock``, or None when another process holds it."""
    import fcntl
    import socket

    for _ in range(tries):
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "created": now_iso()}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner, 0)
            return fd
        os.close(fd)  # the holder released and removed that file meanwhile: lock the new one
    return None


def _read_record(path: Path) -> Record:
    with open(path) as fh:
        raw = json.load(fh)
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str) or not isinstance(raw.get("key"), str):
        raise ValueError("not a record object")
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
