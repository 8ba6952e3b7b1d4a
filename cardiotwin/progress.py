"""Progress of long stages: a live bar on a terminal, one log line per step elsewhere.

``progress(title, total, unit=...)`` is a context manager yielding a ``StageProgress``:
``advance(n=1, detail="")`` counts finished steps (sweep tasks, beats, iterations) and
``status(detail)`` changes the text beside the bar without counting (e.g. the simulated time of
the running beats). On an interactive terminal (rich's console) with INFO logging on, a rich bar
(title, done / total, elapsed time, detail) redraws in place under the log messages; otherwise
each finished step is one log line ``title: done/total unit (detail)`` and ``status`` logs a
line at most every ``heartbeat_s`` seconds (30: a log file shows a long beat is alive without a
line per redraw). With ``-q`` (WARNING) it shows nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("cardiotwin.progress")


class StageProgress:
    """Counter of one long step; see the module docstring."""

    def __init__(self, title: str, total: int, *, unit: str, bar: Any = None, task: Any = None,
                 heartbeat_s: float = 30.0) -> None:
        self.title, self.total, self.unit = title, int(total), unit
        self.done = 0
        self.detail = ""
        self._bar, self._task = bar, task
        self._heartbeat_s = heartbeat_s
        self._last_line = time.monotonic()

    @property
    def live(self) -> bool:
        """True when drawing a bar on a terminal."""
        return self._bar is not None

    def advance(self, n: int = 1, detail: str = "") -> None:
        self.done += n
        self.detail = detail
        if self._bar is not None:
            self._bar.update(self._task, advance=n, detail=detail)
        elif log.isEnabledFor(logging.INFO):
            log.info("%s: %d/%d %s%s", self.title, self.done, self.total, self.unit, f" ({detail})" if detail else "")
            self._last_line = time.monotonic()

    def set_done(self, done: int, detail: str = "") -> None:
        """Set the count (steps finished elsewhere, e.g. reused from an earlier run)."""
        self.advance(done - self.done, detail)

    def status(self, detail: str) -> None:
        self.detail = detail
        if self._bar is not None:
            self._bar.update(self._task, detail=detail)
        elif detail and time.monotonic() - self._last_line >= self._heartbeat_s and log.isEnabledFor(logging.INFO):
            log.info("%s: %d/%d %s, running: %s", self.title, self.done, self.total, self.unit, detail)
            self._last_line = time.monotonic()


def _is_terminal(console: Any) -> bool:
    return bool(getattr(console, "is_terminal", False)) and not getattr(console, "is_dumb_terminal", False)


@contextlib.contextmanager
def progress(title: str, total: int, *, unit: str = "", console: Any = None,
             heartbeat_s: float = 30.0) -> Iterator[StageProgress]:
    """A progress display for ``total`` steps (see the module docstring). ``console``: a rich
    Console (default: rich's global console, which the CLI's log handler writes to)."""
    from rich import get_console

    console = console if console is not None else get_console()
    quiet = not logging.getLogger("cardiotwin").isEnabledFor(logging.INFO)
    if quiet or not _is_terminal(console) or total <= 0:
        yield StageProgress(title, total, unit=unit, heartbeat_s=heartbeat_s)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TimeElapsedColumn(), TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(title, total=total, detail="")
        yield StageProgress(title, total, unit=unit, bar=bar, task=task)
