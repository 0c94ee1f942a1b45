"""Progress bars for long steps (rich), silent in quiet mode (`--quiet` or CI=true)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

console = Console(stderr=True, highlight=False)


def quiet_default() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or not console.is_terminal


class Bar:
    def __init__(self, progress: Progress | None, task: int | None):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, completed: int | None = None, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total)


@contextmanager
def bar(description: str, total: int | None, quiet: bool = False) -> Iterator[Bar]:
    """A progress bar with count, rate and ETA; a no-op when quiet."""
    if quiet:
        yield Bar(None, None)
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
    def advance(self, n: int = 1) -> None:
        super().advance(n)
        self._rate()

    def update(self, completed: int | None = None, total: int | None = None) -> None:
        super().update(completed, total)
        self._rate()

    def _rate(self) -> None:
        task = self._progress.tasks[self._task]
        speed = task.finished_speed or task.speed
        self._progress.update(self._task, rate=f"{speed:,.0f}/s" if speed else "")
