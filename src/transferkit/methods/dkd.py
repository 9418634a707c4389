"""Decoupled knowledge distillation (Zhao et al., CVPR 2022, "Decoupled Knowledge Distillation").

``L = ramp * (alpha * TCKD + beta * NCKD)``: TCKD compares the binary (target class, rest)
probabilities of teacher and student, NCKD their softmaxes over the non-target classes, each
``T^2 * KL`` (:func:`~transferkit.losses.dkd_parts`). Defaults are the paper's CIFAR-100
setting (alpha 1, beta 8, T 4). ``ramp = min(epochs_done / warmup, 1)`` with
``epochs_done = progress * epochs`` (fractional, updated every step): the reference code
(mdistiller) ramps the DKD weight linearly over the first ``warmup = 20`` epochs, per epoch;
here it is 0 at the first step and full after ``warmup`` epochs; ``warmup=0`` turns it off.
``standardize=True`` z-scores both logits first (Sun et al., CVPR 2024). The cross-entropy is
not included: ``distill`` adds ``supervised`` beside it. Labels are needed, so the method reads
the labelled source rows only. ``cache_teacher`` as for ``kd``.
"""

from __future__ import annotations

from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import dkd_parts
from transferkit.methods.base import (
    Batch,
    Outputs,
    Progress,
    TrainInfo,
    capped,
    check_flag,
    check_nonnegative,
    check_scale,
)
from transferkit.methods.registry import METHODS
from transferkit.methods.teacher import TeacherMethod


@METHODS.register("dkd", "decoupled KD: alpha * target-class KD + beta * non-target-class KD, "
                  "linear warm-up (Zhao et al., CVPR 2022)")
class DecoupledKD(TeacherMethod):
    name = "dkd"
    needs_labels = True

    def __init__(
        self,
        teacher: nn.Module,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup: float = 20,
        standardize: bool = False,
        inputs: str = "source",
        cache_teacher: bool | str = False,
        teacher_cache_dir: str | None = None,
        teacher_cache_max_gb: float | None = None,
    ) -> None:
        if inputs != "source":
            raise ConfigError(f"dkd needs the labels of the rows it compares, so inputs must be "
                              f"'source' (target rows are unlabelled), got {inputs!r}")
        check_flag(self.name, "standardize", standardize)
        super().__init__(teacher, inputs, cache_teacher, teacher_cache_dir,
                         teacher_cache_max_gb)
        self.alpha = check_nonnegative("alpha", alpha)
        self.beta = check_nonnegative("beta", beta)
        self.temperature = check_scale("temperature", temperature)
        self.warmup = check_nonnegative("warmup", warmup)
        self.standardize = standardize
        self.epochs = 1  # set from the run in setup()
        self.last: dict[str, Tensor] = {}

    def setup(self, info: TrainInfo) -> None:
        super().setup(info)
        self.epochs = info.epochs

    def ramp(self, progress: Progress) -> Progress:
        """The DKD weight's warm-up factor after ``progress * epochs`` epochs."""
        return 1.0 if self.warmup == 0 else capped(progress * self.epochs / self.warmup)

    def losses(self, batch: Batch, out: Outputs, progress: Progress) -> dict[str, Tensor]:
        if batch.y is None:
            raise ConfigError("dkd needs labels: train on labelled data")
        student, teacher = self.student_and_teacher(batch, out)
        tckd, nckd = dkd_parts(student, teacher, batch.y, self.temperature,
                               standardize=self.standardize)
        self.last = {"tckd": tckd.detach(), "nckd": nckd.detach()}
        return {"dkd": self.ramp(progress) * (self.alpha * tckd + self.beta * nckd)}

    def metrics(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.last.items()}
