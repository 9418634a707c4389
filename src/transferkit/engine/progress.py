"""Progress: a live bar on a terminal, one line per epoch otherwise (nohup, CI, pipes).

The bar shows the running mean loss of the epoch; when an epoch ends its row shows that
epoch's mean loss and the accuracies measured right after it. Without a terminal each epoch
prints the same in one line to stderr, so a long run under ``nohup`` is never silent.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def epoch_summary(row: dict[str, Any]) -> str:
    """``loss 0.1234 | test 95.42%`` for one metrics row."""
    text = f"loss {row['train']['loss']:.4f}"
    evals = " ".join(f"{k} {v['accuracy']:.2%}" for k, v in row.get("eval", {}).items())
    return f"{text} | {evals}" if evals else text


def note(message: str, enabled: bool = True, stream: TextIO | None = None) -> None:
    """One informational line on stderr (what a run is about to do)."""
    if enabled:
        print(message, file=stream or sys.stderr, flush=True)


class ProgressBar:
    """Redraws at most ``refresh_hz`` times a second so it costs nothing per step."""

    def __init__(
        self,
        enabled: bool,
        total_epochs: int,
        refresh_hz: float = 4.0,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and _is_terminal(self.stream)
        self._min_gap = 1.0 / refresh_hz
        self._last = 0.0
        self._progress: Any = None
        self._task: Any = None
        self._epoch = 0
        self._started = 0.0
        self.total_epochs = total_epochs
        self.status = ""

    def __enter__(self) -> ProgressBar:
        if self.live:
            from rich.console import Console  # imported here: `import transferkit` stays light
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def start_epoch(self, epoch: int, steps: int) -> None:
        self._epoch, self._started = epoch, time.monotonic()
        self.status = ""
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"epoch {epoch}/{self.total_epochs}", total=steps, status=""
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

    def end_epoch(self, row: dict[str, Any]) -> None:
        """Show the finished epoch's mean loss and the accuracies measured after it."""
        if not self.enabled:
            return
        self.status = epoch_summary(row)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, status=self.status)
        elif not self.live:
            seconds = time.monotonic() - self._started
            print(f"epoch {self._epoch}/{self.total_epochs}: {self.status} ({seconds:.1f} s)",
                  file=self.stream, flush=True)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
