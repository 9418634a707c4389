"""Shape checks shared by the losses: a mismatch names both shapes."""

from __future__ import annotations

from torch import Tensor

from transferkit.errors import ConfigError


def check_same_shape(student: Tensor, teacher: Tensor) -> None:
    """Student and teacher logits must both be ``N x C`` with the same N and C."""
    if student.shape != teacher.shape:
        raise ConfigError(
            f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} "
            "differ; both models must output N x num_classes for the same classes"
        )
    if student.dim() < 1:
        raise ConfigError("logits need a batch dimension (N x C)")
