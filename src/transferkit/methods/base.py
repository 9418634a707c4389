"""The interface shared by distillation and adaptation methods.

A method turns one batch, plus the student's outputs on it, into named losses; the engine
sums them. Methods that need extra trainable modules (a domain discriminator) own them as
submodules, so the optimizer, checkpoints and DistributedDataParallel see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from transferkit.errors import ConfigError


@dataclass
class Batch:
    """One training step's data: labelled (or unlabelled) inputs and optional target inputs.

    ``index`` / ``target_index`` are the rows' positions in the training tensors, so methods
    can look up per-row values computed once (a cached teacher's logits).
    """

    x: Tensor
    y: Tensor | None = None
    x_target: Tensor | None = None
    index: Tensor | None = None
    target_index: Tensor | None = None


@dataclass
class Outputs:
    """The trained model's outputs on a batch, computed once per step and shared by methods."""

    logits: Tensor
    features: Tensor | None = None
    target_logits: Tensor | None = None
    target_features: Tensor | None = None
    joint_features: Tensor | None = None  # source then target rows, as the model produced them


@dataclass
class TrainInfo:
    """What methods may need to build their modules before training starts."""

    num_classes: int
    feature_dim: int | None = None
    class_counts: Tensor | None = None
    total_steps: int = 1
    x: Tensor | None = None
    x_target: Tensor | None = None
    jitter: int = 0


class Method(nn.Module):
    """Base class: subclasses set ``name`` and implement :meth:`losses`."""

    name: ClassVar[str] = ""
    needs_features: ClassVar[bool] = False
    needs_target: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False

    def setup(self, info: TrainInfo) -> None:
        """Build extra modules once the model's feature size is known."""

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        """Named loss terms for this batch; ``progress`` runs from 0 to 1 over training."""
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """Extra values to log for the last step (for example the current GRL coefficient)."""
        return {}

    def close(self) -> None:
        """Undo what the method changed on modules it was given (called after training)."""


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


def check_fraction(name: str, value: object) -> float:
    number = _number(name, value)
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
    return number


def check_nonnegative(name: str, value: object) -> float:
    number = _number(name, value)
    if not number >= 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
    return number


def check_positive(name: str, value: object) -> float:
    number = _number(name, value)
    if not number > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    return number
