"""A progress bar on stderr for commands over many runs: drawn by rich on a terminal, absent
elsewhere (a pipe or a test gets only the result)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Step(Protocol):
    """What the replay and what-if reports pass after each run."""

    @property
    def done(self) -> int: ...

    @property
    def total(self) -> int: ...


class Bar:
    """``bar(step)`` moves the bar to ``step.done`` of ``step.total``."""

    def __init__(self, progress: Progress | None, description: str) -> None:
        self._progress = progress
        self._task = None if progress is None else progress.add_task(description, total=None)

    def __call__(self, step: Step) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=step.done, total=step.total)


@contextmanager
def progress_bar(description: str) -> Iterator[Bar]:
    """A bar for the block (a no-op one when stderr is not a terminal)."""
    if not sys.stderr.isatty():
        yield Bar(None, description)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr, highlight=False, markup=False),
        transient=True,
    )
    with progress:
        yield Bar(progress, description)
