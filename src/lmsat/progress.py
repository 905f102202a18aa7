"""One progress style for every long-running step, on stderr.

* :func:`track` iterates with a bar: what is being done, done/total with units
  (``12/40 batches``), elapsed time and an ETA once one can be known.
* :func:`status` wraps a step without countable units (loading a model, a dense
  eigen-decomposition): a spinner with the elapsed time, and one line when it ends.

On a terminal this is a live rich display. When stderr is not a terminal (a log file, CI,
a pipe) nothing is redrawn: :func:`track` prints one line when it starts, at most one
every :data:`LOG_EVERY_S` seconds, and one when it ends; :func:`status` prints one line when
it starts and one when it ends; never blank lines. A step that ends within
:data:`QUIET_UNDER_S` seconds prints nothing (its start line is held back until then), so a
sweep of a hundred small checkpoints logs the sweep, not four lines per checkpoint.
``LMSAT_PROGRESS=0`` silences both.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
console = Console(stderr=True)
LOG_EVERY_S = 15.0
QUIET_UNDER_S = 2.0


def _say(text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


class _Deferred:
    """A start line printed only once its step has run :data:`QUIET_UNDER_S` seconds (by a timer,
    or at the first progress tick after that); ``shown`` tells the end line whether to print."""

    def __init__(self, line: str) -> None:
        self.line, self.shown, self._lock = line, False, threading.Lock()
        self._timer: threading.Timer | None = None
        if QUIET_UNDER_S <= 0:
            self.show()
        else:
            self._timer = threading.Timer(QUIET_UNDER_S, self.show)
            self._timer.daemon = True
            self._timer.start()

    def show(self) -> None:
        with self._lock:
            if not self.shown:
                self.shown = True
                _say(self.line)

    def close(self) -> bool:
        """Stop the timer; whether the start line was shown (then the end line is printed too)."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            return self.shown


def enabled() -> bool:
    return os.environ.get("LMSAT_PROGRESS", "1") != "0"


def live() -> bool:
    """Whether progress is drawn live (stderr is a terminal) rather than logged as lines."""
    return console.is_terminal and not console.is_dumb_terminal


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def make_progress(unit: str = "") -> Progress:
    """A rich progress display (terminal only: off when stderr is not a terminal or progress is silenced)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not (enabled() and live()),
    )


class _LineLog:
    """Progress as occasional log lines (stderr is not a terminal)."""

    def __init__(self, description: str, total: int | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.started = _Deferred(f"{description}: started" + (f", {total:,} {unit}" if total is not None else ""))

    def _print(self, text: str) -> None:
        self.started.show()
        _say(text)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= LOG_EVERY_S:
            self.last = now
            elapsed = now - self.start
            eta = ""
            if self.total and self.done:
                eta = f", ETA {_clock(elapsed * (self.total - self.done) / self.done)}"
            of = f"/{self.total:,}" if self.total is not None else ""
            self._print(f"{self.description}: {self.done:,}{of} {self.unit}, {_clock(elapsed)} elapsed{eta}")

    def finish(self) -> None:
        if self.started.close():
            _say(f"{self.description}: {self.done:,} {self.unit} in {_clock(time.perf_counter() - self.start)}")


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "steps") -> Iterator[T]:
    """Iterate with progress on stderr (module docstring); ``unit`` names what one item is (batches, checkpoints, ...)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not enabled():
        yield from items
        return
    if not live():
        log = _LineLog(description, total, unit)
        for item in items:
            yield item
            log.advance()
        log.finish()
        return
    with make_progress(unit) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


@contextmanager
def status(description: str) -> Iterator[None]:
    """Show that ``description`` is under way (spinner and elapsed time), then one line with how long it took."""
    if not enabled():
        yield
        return
    start = time.perf_counter()
    if live():
        with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(), console=console, transient=True) as p:
            p.add_task(description, total=None)
            yield
        shown = time.perf_counter() - start >= QUIET_UNDER_S
    else:
        started = _Deferred(f"{description} ...")
        try:
            yield
        finally:
            shown = started.close()
    if shown:
        _say(f"{description}: done in {_clock(time.perf_counter() - start)}")
