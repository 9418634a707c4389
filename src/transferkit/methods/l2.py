"""The article's objective: weighted L2 between teacher and student logits.

``L = sum_i w_i * ||f_t(x_i) - f_s(x_i)||^2 / scale`` (+ ``ce_weight * CE(f_s(x), y)``), with
``w_i = 1/N`` by default, or weights from the teacher's confidence or class balance; with
``reduction="mean"`` the squared norm is divided by the number of classes. ``scale="auto"``
(the default) is measured once from the teacher at setup; ``scale=1`` is the article's formula.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import logit_rms, sample_weights, weighted_l2
from transferkit.losses.l2 import check_reduction, check_scale
from transferkit.methods.base import Batch, Outputs, TrainInfo, check_nonnegative
from transferkit.methods.teacher import TeacherMethod

WEIGHTINGS = ("uniform", "confidence", "class_balance")
PROBE_ROWS = 4096  # at most this many evenly spaced rows (per input set) measure scale="auto"


class L2Distillation(TeacherMethod):
    """``sum_i w_i * d_i / scale``, ``d_i = ||t_i - s_i||^2`` (``reduction="sum"``) or its
    mean over the ``C`` classes (``"mean"``); ``reduction="sum", scale=1`` is the article's
    objective exactly.

    ``scale="auto"`` (the default) is ``max(1, rms)``, with ``rms`` the root mean square of
    the teacher's logits (over rows and classes) on the training rows the loss compares
    (``inputs``: source, target or both; at most :data:`PROBE_ROWS` evenly spaced rows of
    each), measured once at setup and logged as ``l2.scale``. The gradient on each student
    logit, ``2 (s - t) / scale`` per sample, then starts at unit size whatever the teacher's
    logit size, so a teacher with large logits (mean ``|t|`` ~ 50) trains at the learning
    rate of a normal one instead of driving the student to one class. The floor of 1 means
    ``auto`` never makes the loss steeper than the article's. The same rows give the same
    scale on every DDP rank and on resume.
    """

    name = "l2"
    own_label_term = True
    loss_divisors = ("scale",)

    def __init__(
        self,
        teacher: nn.Module,
        weighting: str = "uniform",
        ce_weight: float = 0.0,
        inputs: str = "source",
        cache_teacher: bool | str = False,
        reduction: str = "sum",
        scale: float | str = "auto",
        teacher_cache_dir: str | None = None,
        teacher_cache_max_gb: float | None = None,
    ) -> None:
        super().__init__(teacher, inputs, cache_teacher, teacher_cache_dir,
                         teacher_cache_max_gb)
        if weighting not in WEIGHTINGS:
            valid = ", ".join(WEIGHTINGS)
            raise ConfigError(f"weighting must be one of {valid}, got {weighting!r}")
        self.weighting = weighting
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.reduction = check_reduction(reduction)
        self.scale = check_scale(scale, allow_auto=True)
        # The divisor in use: the number given, or the one measured at setup for "auto".
        self.scale_value: float | None = None if self.scale == "auto" else float(self.scale)
        self.class_counts: Tensor | None = None

    @property
    def needs_labels(self) -> bool:  # type: ignore[override]
        return self.ce_weight > 0

    def setup(self, info: TrainInfo) -> None:
        super().setup(info)
        self.class_counts = info.class_counts
        if self.scale == "auto":
            self.scale_value = self.measure_scale(info)

    @torch.no_grad()
    def measure_scale(self, info: TrainInfo) -> float:
        """``max(1, rms)`` of the teacher's logits on the rows the loss compares."""
        sets = {
            "source": [(info.x, self.cached_logits)],
            "target": [(info.x_target, self.cached_target_logits)],
            "both": [(info.x, self.cached_logits), (info.x_target, self.cached_target_logits)],
        }[self.inputs]
        if any(x is None for x, _ in sets):
            raise ConfigError(
                f"l2: scale='auto' is measured from the {self.inputs} training inputs, which "
                "setup did not get; give scale a number"
            )
        probes = []
        for x, cache in sets:
            assert x is not None
            rows = torch.arange(0, len(x), max(1, math.ceil(len(x) / PROBE_ROWS)))
            if cache is not None:
                probes.append(cache[rows.to(cache.device)].double().cpu())
            else:
                probes.append(self._all_logits(x[rows]).double().cpu())
        rms = logit_rms(torch.cat(probes))
        if not math.isfinite(rms):
            raise ConfigError(
                "l2: the teacher's logits on the training inputs are not finite; "
                "scale='auto' cannot be measured"
            )
        return max(1.0, rms)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        if self.scale_value is None:
            raise ConfigError("l2: scale='auto' is measured in setup(); call it before losses()")
        student, teacher = self.student_and_teacher(batch, out)
        labels = batch.y if self.inputs == "source" else None
        counts = None if self.class_counts is None else self.class_counts.to(teacher.device)
        weights = (
            None
            if self.weighting == "uniform"
            else sample_weights(self.weighting, teacher, labels=labels, class_counts=counts)
        )
        l2 = weighted_l2(student, teacher, weights, reduction=self.reduction,
                         scale=self.scale_value)
        terms = {"l2": l2}
        if self.ce_weight > 0:
            assert batch.y is not None
            terms["ce"] = self.ce_weight * F.cross_entropy(out.logits, batch.y)
        return terms

    def metrics(self) -> dict[str, float]:
        """``scale`` (logged as ``l2.scale``): the divisor of the squared norms."""
        return {} if self.scale_value is None else {"scale": self.scale_value}
