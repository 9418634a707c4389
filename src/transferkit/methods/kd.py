"""Hinton et al. 2015 soft targets.

``L = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``; the T^2
factor keeps the soft-target gradients on the same scale as the hard-label ones.
Without labels (distilling on unlabelled target data) only the soft term is used.

``standardize=True`` (Sun et al., CVPR 2024, "Logit Standardization in Knowledge
Distillation") z-scores each sample's teacher and student logits before the soft term
(:func:`~transferkit.losses.standardized_kd_loss`); ``temperature`` is then a *base*
temperature (the paper's CIFAR-100 KD+LS uses 2; the value given here is kept as is). The
hard term stays on the raw logits.

``kd_weight`` / ``ce_weight`` replace ``alpha`` / ``1 - alpha`` when given, for recipes
that do not sum to one: the paper's CIFAR-100 KD+LS uses ``9 * soft + 0.1 * CE``
(``standardize=true, temperature=2, kd_weight=9, ce_weight=0.1``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import soft_target_loss, standardized_kd_loss
from transferkit.methods.base import (
    Batch,
    Outputs,
    check_flag,
    check_fraction,
    check_nonnegative,
    check_scale,
)
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
        cache_teacher: bool | str = False,
        standardize: bool = False,
        kd_weight: float | None = None,
        ce_weight: float | None = None,
        teacher_cache_dir: str | None = None,
        teacher_cache_max_gb: float | None = None,
    ) -> None:
        super().__init__(teacher, inputs, cache_teacher, teacher_cache_dir,
                         teacher_cache_max_gb)
        self.temperature = check_scale("temperature", temperature)
        self.alpha = check_fraction("alpha", alpha)
        if kd_weight is not None and ce_weight is not None and alpha != 0.9:
            raise ConfigError(f"{self.name}: kd_weight and ce_weight replace alpha; drop alpha "
                              "or one of them")
        check_flag(self.name, "standardize", standardize)
        self.standardize = standardize
        # without labels the soft term stands alone at weight 1, unless kd_weight is given
        self.unlabelled_weight = 1.0 if kd_weight is None else check_nonnegative(
            "kd_weight", kd_weight)
        self.soft_weight = self.alpha if kd_weight is None else self.unlabelled_weight
        self.hard_weight = 1.0 - self.alpha if ce_weight is None else check_nonnegative(
            "ce_weight", ce_weight)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        student, teacher = self.student_and_teacher(batch, out)
        soft_loss = standardized_kd_loss if self.standardize else soft_target_loss
        soft = soft_loss(student, teacher, self.temperature)
        if batch.y is None:
            return {"kd": self.unlabelled_weight * soft}
        if self.hard_weight == 0.0:
            return {"kd": self.soft_weight * soft}
        hard = F.cross_entropy(out.logits, batch.y)
        return {"kd": self.soft_weight * soft, "ce": self.hard_weight * hard}
