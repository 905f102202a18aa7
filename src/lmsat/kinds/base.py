"""What every record kind shares: a frozen typed view of one stored record.

A kind module (``lmsat.kinds.<kind>``) defines one subclass of :class:`KindRecord`
per record kind. Its typed fields are the ``results`` of the record, in the order
the writer stores them; results the kind does not type are kept verbatim in
``extra``, so ``from_record(rec).to_record()`` gives back exactly the stored
``(inputs, results, arrays)`` (tested for every kind).

* :meth:`KindRecord.from_record` checks the kind and the schema string
  ``lmsat.<kind>/N``: a version the kind reads is upgraded explicitly
  (:meth:`KindRecord.upgrade`); any other says which lmsat to re-run.
* :meth:`KindRecord.to_record` gives the ``(kind, key, inputs, results, arrays,
  schema_version)`` that :meth:`lmsat.store.Store.put` takes; :meth:`KindRecord.put`
  writes it.
* Each kind module also owns its table (:func:`table`, a pandas frame with
  human-readable column names and units).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

import numpy as np

from lmsat.errors import UserError
from lmsat.store import Record, Store

K = TypeVar("K", bound="KindRecord")

# Fields of KindRecord itself (not results).
_OWN = ("key", "inputs", "extra", "arrays", "record")


@dataclass(frozen=True)
class KindRecord:
    """One record of one kind; subclasses add the typed results fields (all with defaults)."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    # Older schema versions from_record still reads (upgraded by :meth:`upgrade`).
    READS: ClassVar[tuple[int, ...]] = ()
    # The command that writes this kind (named in the re-run message).
    WRITER: ClassVar[str] = "lmsat"

    key: str = ""
    inputs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    arrays: tuple[str, ...] = ()
    record: Record | None = field(default=None, repr=False, compare=False)

    # --- reading ----------------------------------------------------------------------------

    @classmethod
    def result_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name not in _OWN]

    @classmethod
    def schema(cls, version: int | None = None) -> str:
        return f"lmsat.{cls.KIND}/{cls.VERSION if version is None else version}"

    @classmethod
    def from_record(cls, rec: Record) -> Self:
        """The typed view of a stored record; a UserError if its kind or schema is not this one's."""
        if rec.kind != cls.KIND:
            raise UserError(f"record '{rec.key}' is of kind '{rec.kind}', not '{cls.KIND}'.")
        version = schema_version(rec.schema, cls.KIND)
        where = f" ({rec.path})" if rec.path is not None else ""
        if version is None:
            raise UserError(f"record '{rec.key}'{where} has schema '{rec.schema}', not {cls.schema()}; "
                            f"delete it and re-run `{cls.WRITER}`.")
        if version != cls.VERSION and version not in cls.READS:
            raise UserError(f"record '{rec.key}'{where} has schema {rec.schema}, which this lmsat does not read "
                            f"(it reads {', '.join(cls.schema(v) for v in (cls.VERSION, *cls.READS))}); "
                            f"re-run `{cls.WRITER}` with this lmsat into a new run directory.")
        results = dict(rec.results)
        inputs = dict(rec.inputs)
        arrays = tuple(rec.arrays)
        if version != cls.VERSION:
            inputs, results, arrays = cls.upgrade(version, inputs, results, arrays, rec)
        typed = {name: results.pop(name) for name in cls.result_fields() if name in results}
        return cls(key=rec.key, inputs=inputs, extra=results, arrays=tuple(arrays), record=rec, **typed)

    @classmethod
    def upgrade(cls, version: int, inputs: dict[str, Any], results: dict[str, Any], arrays: tuple[str, ...],
                rec: Record) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
        """(inputs, results, arrays) of an older schema version in this version's terms."""
        return inputs, results, arrays

    @classmethod
    def load(cls, store: Store) -> list[Self]:
        """Every record of this kind in a run directory, typed."""
        return [cls.from_record(r) for r in store.records(cls.KIND)]

    # --- writing ----------------------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        """The stored results: typed fields in declaration order (unset ones left out), then ``extra``."""
        out: dict[str, Any] = {}
        for name in self.result_fields():
            value = getattr(self, name)
            if value is not _UNSET:
                out[name] = value
        out.update(self.extra)
        return out

    def to_record(self, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Keyword arguments of :meth:`lmsat.store.Store.put` for this record."""
        return {"kind": self.KIND, "key": self.key, "inputs": dict(self.inputs), "results": self.results(),
                "arrays": arrays, "schema_version": self.VERSION}

    def put(self, store: Store, arrays: dict[str, np.ndarray] | None = None) -> Record:
        """Write this record (arrays first, then the json) and return the stored record."""
        return store.put(**self.to_record(arrays))

    # --- helpers ----------------------------------------------------------------------------

    def load_arrays(self) -> dict[str, np.ndarray]:
        return self.record.load_arrays() if self.record is not None else {}

    @property
    def source(self) -> tuple[str, str]:
        """(kind, key): how findings name the records they rest on."""
        return (self.KIND, self.key)


class _Unset:
    """Marker of a results field the record does not hold (left out of :meth:`KindRecord.results`)."""

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


_UNSET: Any = _Unset()
UNSET: Any = _UNSET


def opt(default: Any = _UNSET) -> Any:
    """A results field that older writers may not have stored (absent: left out when written back)."""
    return field(default=default)


def value(x: Any) -> Any:
    """``x`` with an absent (UNSET) field read as None."""
    return None if x is _UNSET else x


def schema_version(schema: str, kind: str) -> int | None:
    prefix = f"lmsat.{kind}/"
    if not isinstance(schema, str) or not schema.startswith(prefix):
        return None
    try:
        return int(schema[len(prefix):])
    except ValueError:
        return None


def number(x: Any) -> float | None:
    """A finite float, or None (absent, None, NaN, a bool or not a number)."""
    if x is None or x is _UNSET or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def integer(x: Any) -> int | None:
    f = number(x)
    return int(f) if f is not None else None


def as_kind(rec: Any, cls: type[K]) -> K:
    """A stored :class:`~lmsat.store.Record` as ``cls`` (a typed record is returned as is)."""
    return cls.from_record(rec) if isinstance(rec, Record) else rec
