"""A live progress bar with the current losses and accuracy (rich), or nothing."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ProgressBar:
    """Redraws at most ``refresh_hz`` times a second so it costs nothing per step."""

    def __init__(self, enabled: bool, total_epochs: int, refresh_hz: float = 4.0) -> None:
        self.enabled = enabled
        self._min_gap = 1.0 / refresh_hz
        self._last = 0.0
        self._progress: Progress | None = None
        self._task = None
        self.total_epochs = total_epochs
        self.status = ""

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=sys.stderr),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"epoch {epoch}/{self.total_epochs}", total=steps, status=self.status
            )

    def due(self) -> bool:
        """True when a redraw is due; callers compute live values only then."""
        if self._progress is None:
            return False
        now = time.monotonic()
        if now - self._last < self._min_gap:
            return False
        self._last = now
        return True

    def update(self, completed: int, status: str | None = None) -> None:
        if self._progress is not None and self._task is not None:
            if status is not None:
                self.status = status
            self._progress.update(self._task, completed=completed, status=self.status)
