"""The article's objective: weighted L2 between teacher and student logits.

``L = sum_i w_i * ||f_t(x_i) - f_s(x_i)||^2`` (+ ``ce_weight * CE(f_s(x), y)``), with
``w_i = 1/N`` by default, or weights from the teacher's confidence or class balance.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import sample_weights, weighted_l2
from transferkit.methods.base import Batch, Outputs, TrainInfo, check_nonnegative
from transferkit.methods.teacher import TeacherMethod

WEIGHTINGS = ("uniform", "confidence", "class_balance")


class L2Distillation(TeacherMethod):
    name = "l2"

    def __init__(
        self,
        teacher: nn.Module,
        weighting: str = "uniform",
        ce_weight: float = 0.0,
        inputs: str = "source",
        cache_teacher: bool = False,
    ) -> None:
        super().__init__(teacher, inputs, cache_teacher)
        if weighting not in WEIGHTINGS:
            valid = ", ".join(WEIGHTINGS)
            raise ConfigError(f"weighting must be one of {valid}, got {weighting!r}")
        self.weighting = weighting
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.class_counts: Tensor | None = None

    @property
    def needs_labels(self) -> bool:  # type: ignore[override]
        return self.ce_weight > 0

    def setup(self, info: TrainInfo) -> None:
        super().setup(info)
        self.class_counts = info.class_counts

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        student, teacher = self.student_and_teacher(batch, out)
        labels = batch.y if self.inputs == "source" else None
        counts = None if self.class_counts is None else self.class_counts.to(teacher.device)
        weights = (
            None
            if self.weighting == "uniform"
            else sample_weights(self.weighting, teacher, labels=labels, class_counts=counts)
        )
        terms = {"l2": weighted_l2(student, teacher, weights)}
        if self.ce_weight > 0:
            assert batch.y is not None
            terms["ce"] = self.ce_weight * F.cross_entropy(out.logits, batch.y)
        return terms


