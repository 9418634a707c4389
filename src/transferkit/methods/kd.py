"""Hinton et al. 2015 soft targets.

``L = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``; the T^2
factor keeps the soft-target gradients on the same scale as the hard-label ones.
Without labels (distilling on unlabelled target data) only the soft term is used.

``standardize=True`` (Sun et al., CVPR 2024, "Logit Standardization in Knowledge
Distillation") z-scores each sample's teacher and student logits before the soft term
(:func:`~transferkit.losses.standardized_kd_loss`); ``temperature`` is then a *base*
temperature (the paper's CIFAR-100 KD+LS uses 2; the value given here is kept as is). The
hard term stays on the raw logits.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import soft_target_loss, standardized_kd_loss
from transferkit.methods.base import Batch, Outputs, check_fraction, check_positive
from transferkit.methods.teacher import TeacherMethod


class SoftTargetDistillation(TeacherMethod):
    name = "kd"
    own_label_term = True

    def __init__(
        self,
        teacher: nn.Module,
        temperature: float = 4.0,
        alpha: float = 0.9,
        inputs: str = "source",
        cache_teacher: bool = False,
        standardize: bool = False,
    ) -> None:
        super().__init__(teacher, inputs, cache_teacher)
        self.temperature = check_positive("temperature", temperature)
        self.alpha = check_fraction("alpha", alpha)
        if not isinstance(standardize, bool):
            raise ConfigError(f"standardize must be true or false, got {standardize!r}")
        self.standardize = standardize

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        student, teacher = self.student_and_teacher(batch, out)
        soft_loss = standardized_kd_loss if self.standardize else soft_target_loss
        soft = soft_loss(student, teacher, self.temperature)
        if batch.y is None or self.alpha == 1.0:
            return {"kd": soft}
        hard = F.cross_entropy(out.logits, batch.y)
        return {"kd": self.alpha * soft, "ce": (1.0 - self.alpha) * hard}
