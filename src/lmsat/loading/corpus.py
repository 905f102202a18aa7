"""Corpora: text files, folders, globs, JSONL, Parquet, or a Hugging Face dataset.

A :class:`CorpusSpec` names the source; :func:`iter_documents` streams its
documents as strings in a deterministic order (sorted file names, file order),
so the same spec always yields the same text.

Sources, by ``--data``:

* ``path/to/file.txt`` (or ``.md``): the file's text, one document per
  paragraph block of about 1 MB at most (split at newlines).
* ``path/to/folder``: every ``.txt .md .jsonl .json .parquet`` file below it.
* ``"data/*.jsonl"``: a glob (quote it in the shell).
* ``file.jsonl`` / ``file.json``: one JSON object per line; ``--text-field``.
* ``file.parquet``: column ``--text-field``.
* ``hf:NAME``: a Hugging Face dataset, with ``--data-config``, ``--split`` and
  ``--streaming`` (streaming avoids downloading the whole set).
"""

from __future__ import annotations

import glob as _glob
import json
import re
from contextlib import contextmanager
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from lmsat.errors import UserError

TEXT_SUFFIXES = {".txt", ".md", ".text"}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
ALL_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES
HF_PREFIX = "hf:"
_CHUNK_CHARS = 1 << 20


@dataclass(frozen=True)
class CorpusSpec:
    """Where the text comes from (see module docstring)."""

    source: str
    text_field: str = "text"
    config: str | None = None
    split: str = "train"
    streaming: bool = True

    def describe(self) -> dict[str, object]:
        return asdict(self)

    @property
    def is_hub_dataset(self) -> bool:
        return self.source.startswith(HF_PREFIX)


def resolve_files(source: str) -> list[Path]:
    """The sorted corpus files a local source names; a clear error if there are none."""
    has_glob = any(ch in source for ch in "*?[")
    if has_glob:
        files = [Path(p) for p in sorted(_glob.glob(source, recursive=True))]
        files = [p for p in files if p.is_file() and p.suffix.lower() in ALL_SUFFIXES]
        if not files:
            raise UserError(f"no corpus files match '{source}'; check the pattern (supported: {', '.join(sorted(ALL_SUFFIXES))}).")
        return files
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(
            f"corpus '{source}' does not exist; give a text/JSONL/Parquet file, a folder, a glob, or hf:NAME for a Hugging Face dataset."
        )
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in ALL_SUFFIXES)
    if not files:
        raise UserError(f"folder '{source}' holds no corpus files ({', '.join(sorted(ALL_SUFFIXES))}).")
    return files


_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
BINARY_FRACTION = 0.3  # more non-text bytes than this (of those read) and the corpus gets a warning
_WARNED: set[tuple[str, str]] = set()


class TextStats:
    """Bytes read, undecodable bytes replaced, control characters: one policy for every file type.

    Undecodable bytes (not UTF-8) in .txt, JSONL and Parquet (binary columns) are replaced by
    U+FFFD; :meth:`warn` prints one warning with their count, and one when the text looks
    mostly binary. Hub datasets arrive as decoded strings.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.bytes = 0
        self.replaced = 0
        self.control = 0

    def decode(self, raw: bytes) -> str:
        self.bytes += len(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            kept = raw.decode("utf-8", errors="ignore")
            self.replaced += len(raw) - len(kept.encode("utf-8"))
            text = raw.decode("utf-8", errors="replace")
        self.control += len(_CONTROL.findall(text))
        return text

    def warn(self) -> None:
        """One warning per corpus and problem in this process (a corpus is often read twice)."""
        from lmsat.store import warn

        if self.replaced and (self.source, "replaced") not in _WARNED:
            _WARNED.add((self.source, "replaced"))
            warn(f"corpus '{self.source}': {self.replaced:,} undecodable byte(s) (not UTF-8) in the text read "
                 "were replaced by U+FFFD; re-encode the files as UTF-8 to keep them.")
        if self.bytes and (self.replaced + self.control) > BINARY_FRACTION * self.bytes and (self.source, "binary") not in _WARNED:
            _WARNED.add((self.source, "binary"))
            share = 100 * (self.replaced + self.control) / self.bytes
            warn(f"corpus '{self.source}' looks mostly binary: {share:.0f}% of the {self.bytes:,} bytes read are not text "
                 "(undecodable or control characters); check --data.")


@contextmanager
def _stats_for(path: Path, stats: TextStats | None) -> Iterator[TextStats]:
    """``stats`` if given (the caller warns once per corpus), else a per-file one that warns at the end."""
    own = TextStats(str(path)) if stats is None else stats
    try:
        yield own
    finally:
        if stats is None:
            own.warn()


def _iter_text_file(path: Path, stats: TextStats | None = None) -> Iterator[str]:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise UserError(f"cannot read corpus file '{path}': {exc.strerror}.") from exc
    with fh, _stats_for(path, stats) as st:
        buf: list[str] = []
        size = 0
        for raw in fh:
            # universal newlines, as text mode reads them
            line = st.decode(raw).replace("\r\n", "\n").replace("\r", "\n")
            buf.append(line)
            size += len(line)
            if size >= _CHUNK_CHARS:
                yield "".join(buf)
                buf, size = [], 0
        if buf:
            yield "".join(buf)


def _iter_jsonl_file(path: Path, text_field: str, stats: TextStats | None = None) -> Iterator[str]:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise UserError(f"cannot read corpus file '{path}': {exc.strerror}.") from exc
    with fh, _stats_for(path, stats) as st:
        for lineno, raw in enumerate(fh, 1):
            line = st.decode(raw).strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno} is not valid JSON ({exc.msg}); JSONL corpora need one JSON object per line.") from exc
            if not isinstance(obj, dict) or text_field not in obj:
                keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
                raise UserError(f"{path}:{lineno} has no field '{text_field}' (found: {keys}); pass --text-field.")
            text = obj[text_field]
            if isinstance(text, str) and text:
                yield text


def _iter_parquet_file(path: Path, text_field: str, stats: TextStats | None = None) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise UserError(f"cannot read Parquet file '{path}': {exc}.") from exc
    if text_field not in pf.schema_arrow.names:
        raise UserError(f"Parquet file '{path}' has no column '{text_field}' (columns: {', '.join(pf.schema_arrow.names)}); pass --text-field.")
    with _stats_for(path, stats) as st:
        for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
            for text in batch.column(0).to_pylist():
                if isinstance(text, (bytes, bytearray)):  # a binary column: the same policy as text files
                    text = st.decode(bytes(text))
                if isinstance(text, str) and text:
                    yield text


def _iter_hub_dataset(spec: CorpusSpec) -> Iterator[str]:
    import datasets

    name = spec.source[len(HF_PREFIX):]
    if not Path(name).exists():
        from lmsat.loading.models import check_hub_reachable

        check_hub_reachable(f"dataset {name}")
    try:
        ds = datasets.load_dataset(name, spec.config, split=spec.split, streaming=spec.streaming)
    except Exception as exc:  # datasets raises many types (network, missing config, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot load Hugging Face dataset '{name}' (config={spec.config}, split={spec.split}): {reason[:300]}. "
            "Check the name, --data-config and --split, and that the hub is reachable."
        ) from exc
    for row in ds:
        if spec.text_field not in row:
            raise UserError(f"dataset '{name}' has no field '{spec.text_field}' (fields: {', '.join(row)}); pass --text-field.")
        text = row[spec.text_field]
        if isinstance(text, str) and text:
            yield text


def iter_documents(spec: CorpusSpec, warn: bool = True) -> Iterator[str]:
    """Stream the corpus's documents as non-empty strings, in a deterministic order.

    Undecodable bytes are replaced (U+FFFD); with ``warn`` one warning gives their count
    in the text read (and one more if that text looks mostly binary), see :class:`TextStats`.
    """
    if spec.is_hub_dataset:
        yield from _iter_hub_dataset(spec)
        return
    stats = TextStats(spec.source)
    try:
        for path in resolve_files(spec.source):
            suffix = path.suffix.lower()
            if suffix in JSONL_SUFFIXES:
                yield from _iter_jsonl_file(path, spec.text_field, stats)
            elif suffix in PARQUET_SUFFIXES:
                yield from _iter_parquet_file(path, spec.text_field, stats)
            else:
                yield from _iter_text_file(path, stats)
    finally:
        if warn:
            stats.warn()


DOCUMENT_SPLITS: tuple[str, ...] = ("file", "blank-line", "line")


def _lines(blocks: Iterable[str]) -> Iterator[str]:
    """The lines (each with its ``\\n``) of a text given in blocks cut anywhere: block ends are not line ends."""
    pending: list[str] = []
    for block in blocks:
        parts = block.split("\n")
        for part in parts[:-1]:
            pending.append(part)
            pending.append("\n")
            yield "".join(pending)
            pending = []
        if parts[-1]:
            pending.append(parts[-1])
    if pending:
        yield "".join(pending)


def _split_documents(lines: Iterable[str], documents: str) -> Iterator[tuple[str, bool]]:
    """(piece, ends_document) of the documents in ``lines`` (see :func:`iter_document_pieces`)."""
    if documents == "line":
        for line in lines:
            text = line.rstrip("\r\n")
            if text.strip():
                yield text, True
        return
    buf: list[str] = []
    size = 0
    seen_text = False  # the current document has a non-whitespace character

    def close() -> Iterator[tuple[str, bool]]:
        text = "".join(buf)
        if documents == "blank-line":
            text = text.rstrip("\r\n")
        if seen_text:
            yield text, True

    for line in lines:
        if documents == "blank-line" and not line.strip():
            yield from close()
            buf, size, seen_text = [], 0, False
            continue
        # A long document is handed on in pieces, cut only between "X\n" and "Y" with X and Y not whitespace
        # (a pre-token boundary of GPT-2-style BPE tokenizers), never at a read block's end.
        prev = buf[-1] if buf else ""
        if (
            size >= _CHUNK_CHARS
            and seen_text
            and line[:1]
            and not line[:1].isspace()
            and len(prev) >= 2
            and prev[-1] == "\n"
            and not prev[-2].isspace()
        ):
            yield "".join(buf), False
            buf, size = [], 0
        buf.append(line)
        size += len(line)
        seen_text = seen_text or bool(line.strip())
    yield from close()


def iter_document_pieces(spec: CorpusSpec, documents: str = "file") -> Iterator[tuple[str, bool]]:
    """The corpus as (text, ends_document) pieces, with documents delimited by ``documents``.

    * ``file``: a text file, or one JSONL/Parquet/hub row, is one document;
    * ``blank-line``: paragraphs separated by blank lines are documents (the separating
      blank lines and a paragraph's last newline are dropped);
    * ``line``: every non-blank line is a document (its newline dropped).

    The ~1 MB blocks in which files are read never delimit anything. A document longer
    than about 1 MB comes in several pieces (``ends_document`` False on all but the last),
    cut only at a newline between two non-whitespace characters ("X\\nY", a pre-token boundary
    of GPT-2-style byte-level BPE, so encoding the pieces gives the same ids as the whole);
    the cut points depend only on the text. Whitespace-only documents are skipped.
    """
    if documents not in DOCUMENT_SPLITS:
        raise UserError(f"--documents must be one of {', '.join(DOCUMENT_SPLITS)}; got '{documents}'.")
    if spec.is_hub_dataset:
        rows: Iterator[str] = _iter_hub_dataset(spec)
        for text in rows:
            yield from _split_documents(_lines([text]), documents)
        return
    stats = TextStats(spec.source)  # one warning per corpus for undecodable bytes (see TextStats)
    try:
        for path in resolve_files(spec.source):
            suffix = path.suffix.lower()
            if suffix in JSONL_SUFFIXES or suffix in PARQUET_SUFFIXES:
                rows = (_iter_jsonl_file(path, spec.text_field, stats) if suffix in JSONL_SUFFIXES
                        else _iter_parquet_file(path, spec.text_field, stats))
                for text in rows:
                    yield from _split_documents(_lines([text]), documents)
            else:
                yield from _split_documents(_lines(_iter_text_file(path, stats)), documents)
    finally:
        stats.warn()


def check_corpus(spec: CorpusSpec) -> None:
    """Fail early, with a clear message, if the corpus is missing or holds no text."""
    for doc in iter_documents(spec, warn=False):
        if doc.strip():
            return
    raise UserError(f"corpus '{spec.source}' contains no text; point --data at files with content.")
