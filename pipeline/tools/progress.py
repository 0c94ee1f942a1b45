"""Progress bars for long steps (rich), silent in quiet mode (`--quiet` or CI=true)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

console = Console(stderr=True, highlight=False)


def quiet_default() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or not console.is_terminal


class Bar:
    """A progress bar that shows nothing (quiet mode); `bar()` yields a visible one otherwise."""

    def advance(self, n: int = 1) -> None:
        pass

    def update(self, completed: int | None = None, total: int | None = None) -> None:
        pass


@contextmanager
def bar(description: str, total: int | None, quiet: bool = False) -> Iterator[Bar]:
    """A progress bar with count, rate and ETA; a no-op when quiet."""
    if quiet:
        yield Bar()
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, rate="")
        b = _RateBar(progress, task)
        yield b


class _RateBar(Bar):
    def __init__(self, progress: Progress, task: TaskID):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)
        self._rate()

    def update(self, completed: int | None = None, total: int | None = None) -> None:
        self._progress.update(self._task, completed=completed, total=total)
        self._rate()

    def _rate(self) -> None:
        task = self._progress.tasks[self._task]
        speed = task.finished_speed or task.speed
        self._progress.update(self._task, rate=f"{speed:,.0f}/s" if speed else "")
