"""Feature normalisation fitted on the training rows and kept with the model.

Steps run in order: ``log`` is ``log1p(x)`` (needs ``x >= 0``), ``l1`` divides each row by
its sum of absolute values (a zero row stays zero), ``zscore`` is ``(x - mean) / std`` per
feature (per channel for images), mean and population std (``ddof=0``) of the training rows
after the steps before it; a constant feature keeps ``std = 1``. A fitted ``Normalization``
holds those statistics, so rows met later (``predict`` on field data, a few rows at a time)
are read exactly as the training rows were, not with statistics of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from transferkit.errors import ConfigError, DataError

STEPS = ("zscore", "l1", "log")


@dataclass(frozen=True)
class Normalization:
    """``steps`` in order; ``mean``/``std`` (float64, shaped to broadcast over a batch) are
    the ``zscore`` statistics, None without a ``zscore`` step."""

    steps: tuple[str, ...]
    mean: Tensor | None = None
    std: Tensor | None = None

    @property
    def words(self) -> str:
        """``log, zscore (statistics of the training split)``."""
        stats = " (statistics of the training split)" if "zscore" in self.steps else ""
        return f"{', '.join(self.steps)}{stats}"

    def apply(self, where: str, x: Tensor) -> Tensor:
        """The steps on ``x`` with the fitted statistics (``where`` names the data in errors)."""
        for i in range(len(self.steps)):
            x = _step(where, self.steps, i, x, self.mean, self.std)
        return x

    def refuse_other_steps(self, given: tuple[str, ...], flag: str, applier: str) -> None:
        """Rows read with ``given`` steps other than these would be normalised twice, or
        with other statistics, by ``applier`` (predict, an exported graph), which applies
        these itself; ``flag`` is how the user wrote the option."""
        if given and given != self.steps:
            raise ConfigError(
                f"{flag}={','.join(given)}: the model was trained on rows normalised by "
                f"{','.join(self.steps)}, which {applier} applies itself with the training "
                "rows' statistics; drop the option")

    def to_record(self) -> dict[str, Any]:
        """Plain lists (a model.pt or an exported file's JSON holds them)."""
        record: dict[str, Any] = {"steps": list(self.steps)}
        if self.mean is not None and self.std is not None:
            record["shape"] = list(self.mean.shape[1:])
            record["mean"] = self.mean.flatten().tolist()
            record["std"] = self.std.flatten().tolist()
        return record

    @classmethod
    def from_record(cls, record: Any, where: str) -> Normalization:
        """The inverse of ``to_record``; a damaged record raises DataError naming ``where``."""
        def bad(why: str) -> DataError:
            return DataError(f"{where}: its normalisation record is damaged ({why}); use a "
                             "file that transferkit wrote")

        if not isinstance(record, dict):
            raise bad(f"a dict was expected, got {type(record).__name__}")
        steps = record.get("steps")
        if not (isinstance(steps, list | tuple) and steps and all(s in STEPS for s in steps)
                and len(set(steps)) == len(steps)):
            raise bad(f"steps must list distinct steps among {', '.join(STEPS)}, got {steps!r}")
        if "zscore" not in steps:
            return cls(tuple(steps))
        shape = record.get("shape")
        if not (isinstance(shape, list | tuple) and all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
            raise bad(f"shape must be a list of positive ints, got {shape!r}")
        size = math.prod(shape)
        stats = []
        for name in ("mean", "std"):
            values = record.get(name)
            if not (isinstance(values, list | tuple) and len(values) == size and all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    for v in values)):
                raise bad(f"{name} must be {size} finite numbers")
            stats.append(torch.tensor(values, dtype=torch.float64).view(1, *shape))
        if bool((stats[1] < 1e-30).any()):  # dividing by less overflows float32
            raise bad("std must be at least 1e-30")
        return cls(tuple(steps), stats[0], stats[1])


def fit(where: str, steps: tuple[str, ...], train: Tensor) -> tuple[Normalization, Tensor]:
    """The normalisation fitted on ``train`` and ``train`` normalised by it."""
    mean = std = None
    for i, step in enumerate(steps):
        if step == "zscore":
            dims = [0, *range(2, train.dim())]
            data = train.double()
            mean = data.mean(dims, keepdim=True)
            std = data.std(dims, correction=0, keepdim=True)
            std[std == 0] = 1.0
        train = _step(where, steps, i, train, mean, std)
    return Normalization(tuple(steps), mean, std), train


def _step(where: str, steps: tuple[str, ...], i: int, x: Tensor, mean: Tensor | None,
          std: Tensor | None) -> Tensor:
    step = steps[i]
    if step == "log":
        negative = int((x < 0).sum())
        if negative:
            hint = "; zscore before log makes values negative: put log first" \
                if "zscore" in steps[:i] else ""
            raise DataError(f"{where}: normalize step log (log1p) needs values >= 0, but "
                            f"{negative} values are negative (min {float(x.min()):g}){hint}")
        return torch.log1p(x)
    if step == "l1":
        norm = x.abs().flatten(1).sum(1, dtype=torch.float64)
        norm[norm == 0] = 1.0
        return (x.double() / norm.view(-1, *([1] * (x.dim() - 1)))).float()
    assert mean is not None and std is not None
    if tuple(x.shape[1:2]) != tuple(mean.shape[1:2]) or x.dim() != mean.dim():
        raise DataError(f"{where}: rows of shape {tuple(x.shape[1:])} cannot be normalised "
                        f"with statistics of {mean.shape[1]} features or channels")
    return ((x.double() - mean) / std).float()
