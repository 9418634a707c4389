"""Optional TensorBoard logging: the scalars of ``metrics.jsonl``, one point per epoch.

The event files in ``RUN/tensorboard/`` hold exactly the checkpoint's history, like
``metrics.jsonl``: at a resume the old event files are replaced by the history the checkpoint
holds, so a point is never written twice nor one of an epoch the checkpoint lacks kept.
Needs the ``tensorboard`` package (``pip install 'transferkit[tensorboard]'``), imported only
when asked for so that ``import transferkit`` stays light.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from transferkit.errors import ConfigError, RunDirError
from transferkit.files import describe_os_error

FOLDER = "tensorboard"
INSTALL = "pip install 'transferkit[tensorboard]'"
# Row keys that are bookkeeping, not a metric to plot.
NOT_SCALARS = {"epoch", "step", "seconds", "lr", "train", "eval", "validators", "peers"}
EVAL_KEYS = ("accuracy", "loss")


def require_tensorboard() -> None:
    """Refuse ``tensorboard=True`` before anything trains when the package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"--tensorboard (tensorboard=True) needs the tensorboard package: "
                          f"{INSTALL}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value)


def scalars(row: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` for one metrics row: ``train/<loss>``, ``eval/<split>/accuracy|loss``,
    ``method/<metric>`` (``dann.grl_coeff``...), ``validators/<name>``, ``lr`` and
    ``peers/<net>/<split>/accuracy|loss``."""
    for name, value in (row.get("train") or {}).items():
        if _number(value):
            yield f"train/{name}", float(value)
    for split, values in (row.get("eval") or {}).items():
        for key in EVAL_KEYS:
            if _number((values or {}).get(key)):
                yield f"eval/{split}/{key}", float(values[key])
    for name, value in row.items():
        if name not in NOT_SCALARS and _number(value):
            yield f"method/{name}", float(value)
    for name, value in (row.get("validators") or {}).items():
        if _number(value):
            yield f"validators/{name}", float(value)
    if _number(row.get("lr")):
        yield "lr", float(row["lr"])
    for peer, splits in (row.get("peers") or {}).items():
        for split, values in (splits or {}).items():
            for key in EVAL_KEYS:
                if _number((values or {}).get(key)):
                    yield f"peers/{peer}/{split}/{key}", float(values[key])


class ScalarLog:
    """A SummaryWriter on ``RUN/tensorboard`` whose global step is the (1-based) epoch."""

    def __init__(self, run_dir: Path, history: Iterable[dict[str, Any]]) -> None:
        """Start the log afresh with ``history`` (the checkpoint's rows; empty for a new run).

        Earlier event files are removed first: they may hold epochs the checkpoint lacks (a
        kill after logging) or miss some (events not flushed). ``purge_step=1`` also tells a
        TensorBoard that has already read them to drop their points.
        """
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        folder = run_dir / FOLDER
        try:
            for old in folder.glob("events.out.tfevents.*"):
                old.unlink()
            self.writer = SummaryWriter(str(folder), purge_step=1)
        except OSError as exc:
            raise RunDirError(describe_os_error(exc, folder, "write TensorBoard logs in")
                              ) from None
        for row in history:
            self.add(row, flush=False)
        self.writer.flush()

    def add(self, row: dict[str, Any], flush: bool = True) -> None:
        """Log one epoch's row, flushed at once so a kill loses nothing the checkpoint has."""
        step = int(row.get("epoch", 0))
        for tag, value in scalars(row):
            self.writer.add_scalar(tag, value, step)
        if flush:
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()
