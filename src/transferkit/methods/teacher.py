"""A frozen teacher held by distillation methods.

The teacher is deliberately not a registered submodule: its weights stay out of the
optimizer, the student's checkpoints and DistributedDataParallel's gradient buckets.
It is moved with the method (``.to(device)``) and always runs in eval mode without grad.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.methods.base import Batch, Method

INPUTS = ("source", "target", "both")


class TeacherMethod(Method):
    """Base for methods that compare the student with a frozen teacher."""

    def __init__(self, teacher: nn.Module, inputs: str = "source") -> None:
        super().__init__()
        if not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if inputs not in INPUTS:
            raise ConfigError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
        object.__setattr__(self, "teacher", teacher.eval().requires_grad_(False))
        self.inputs = inputs

    @property
    def needs_target(self) -> bool:  # type: ignore[override]
        return self.inputs != "source"

    def _apply(self, fn, recurse=True):  # mirrors nn.Module._apply: the teacher moves too
        self.teacher._apply(fn)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> TeacherMethod:
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        return self.teacher(x)

    def pairs(self, batch: Batch, logits: Tensor, target_logits: Tensor | None):
        """(student logits, inputs) pairs the distillation loss is computed on."""
        if self.inputs == "source":
            return logits, batch.x
        if batch.x_target is None or target_logits is None:
            raise ConfigError(f"{self.name}: inputs={self.inputs!r} needs target data (a pair)")
        if self.inputs == "target":
            return target_logits, batch.x_target
        return torch.cat([logits, target_logits]), torch.cat([batch.x, batch.x_target])
