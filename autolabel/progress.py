"""Progress bars for long work (rich), with a rate column in items per second."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class Advance:
    """``advance(n=1)``, plus ``set_total(n)`` for work that counts its items once it has started.

    The bar appears when its total is known (never a ``0/?``), and not at all for no work.
    """

    def __init__(self, description: str, total: int | None, unit: str, enabled: bool):
        self.description, self.unit, self.enabled = description, unit, enabled
        self.total, self.done = total, 0
        self._progress = self._task = None

    def set_total(self, total: int) -> None:
        self.total = total
        if self._progress is not None:
            self._progress.update(self._task, total=total)
        else:
            self._start()

    def __call__(self, n: int = 1) -> None:
        self.done += n
        if self._progress is None:
            self._start()
        if self._progress is None:
            return
        self._progress.advance(self._task, n)
        speed = self._progress.tasks[0].speed
        if speed:
            self._progress.update(self._task, rate=f"{speed:.2f} {self.unit}/s")

    def _start(self) -> None:
        if not self.enabled or not self.total or self.total <= 0:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        ]
        self._progress = Progress(*columns, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(
            self.description, total=max(self.total, self.done), completed=self.done, rate=""
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextmanager
def progress_bar(description: str, total: int | None, unit: str = "img", disable: bool = False) -> Iterator:
    """Yields an ``Advance``: the bar shows done/total, rate and time left once the total is known.

    Give ``total`` up front, or call ``set_total`` (stages take it as ``on_total``) before the work.
    """
    advance = Advance(description, total, unit, enabled=not disable)
    if total:
        advance.set_total(total)
    try:
        yield advance
    finally:
        advance.close()


def announce_total(advance, total: int) -> None:
    """Tell a progress bar its total once the work is counted (a plain callable ignores it)."""
    set_total = getattr(advance, "set_total", None)
    if set_total is not None:
        set_total(total)
