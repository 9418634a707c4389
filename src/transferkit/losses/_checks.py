"""Checks shared by the losses: shapes (a mismatch names both) and numeric options."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from transferkit.errors import ConfigError


def checking_values() -> bool:
    """False while ``torch.compile`` traces a step: checks that read tensor values (a sync
    and a graph break) run in eager steps only; shape checks run always."""
    return not torch.compiler.is_compiling()


def check_same_shape(student: Tensor, teacher: Tensor) -> None:
    """Student and teacher logits must both be ``N x C`` with the same N and C."""
    if student.shape != teacher.shape:
        raise ConfigError(
            f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} "
            "differ; both models must output N x num_classes for the same classes"
        )
    if student.dim() < 1:
        raise ConfigError("logits need a batch dimension (N x C)")


def check_number(name: str, value: object, *, positive: bool = False,
                 high: float = math.inf) -> float:
    """A finite real number, > 0 (``positive``) or >= 0, at most ``high``."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real)  # NumPy's too
    if ok:
        ok = math.isfinite(value) and (value > 0 if positive else value >= 0) and value <= high
    if not ok:
        low = "> 0" if positive else ">= 0"
        bound = f"{low} and <= {high:g}" if math.isfinite(high) else low
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_count(name: str, value: object, least: int = 1) -> int:
    """An integer >= ``least`` (true/false and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)
