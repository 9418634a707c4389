"""Methods: each turns a batch into named losses; a run sums a list of them."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from transferkit.errors import ConfigError
from transferkit.methods.base import Batch, Method, Outputs, TrainInfo
from transferkit.methods.dann import DANN
from transferkit.methods.kd import SoftTargetDistillation
from transferkit.methods.l2 import L2Distillation
from transferkit.methods.supervised import Supervised
from transferkit.registry import Registry

METHODS: Registry = Registry("method")
METHODS.register("supervised", "cross-entropy on labels (teachers, source-only baseline)")(
    Supervised
)
METHODS.register("l2", "weighted L2 between teacher and student logits (the article's objective)")(
    L2Distillation
)
METHODS.register("kd", "Hinton soft targets with temperature T, mixing weight alpha, T^2 factor")(
    SoftTargetDistillation
)
METHODS.register("dann", "domain-adversarial training: gradient reversal + domain discriminator")(
    DANN
)

DISTILLATION = ("l2", "kd")
ADAPTATION = ("dann",)


def build_method(name: str, teacher: nn.Module | None = None, **options: Any) -> Method:
    """Instantiate a registered method; distillation methods need ``teacher``."""
    factory = METHODS.get(name)
    if name in DISTILLATION:
        if teacher is None:
            raise ConfigError(f"method {name!r} needs a teacher")
        options["teacher"] = teacher
    valid = [p for p in inspect.signature(factory).parameters if p != "teacher"]
    unknown = sorted(set(options) - set(valid) - {"teacher"})
    if unknown:
        raise ConfigError(
            f"method {name!r} has no option {', '.join(unknown)}; its options: "
            f"{', '.join(valid) or 'none'}"
        )
    return factory(**options)


__all__ = [
    "ADAPTATION",
    "DANN",
    "DISTILLATION",
    "METHODS",
    "Batch",
    "L2Distillation",
    "Method",
    "Outputs",
    "SoftTargetDistillation",
    "Supervised",
    "TrainInfo",
    "build_method",
]
