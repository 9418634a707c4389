"""DIST (Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher").

``L = beta * inter + gamma * intra``, with ``P = softmax(z / T)``: ``inter = 1 - mean_i
rho(P^s_i, P^t_i)`` (each sample's class scores) and ``intra = 1 - mean_c rho(P^s_c, P^t_c)``
(each class's scores over the batch), ``rho`` the Pearson correlation, each times ``T^2``
(:func:`~transferkit.losses.dist_parts`). The defaults are the paper's CIFAR-100 setting
(beta = gamma = 2, T = 4); its ImageNet setting is beta = gamma = 1, T = 1. The
cross-entropy is not included: ``distill`` adds ``supervised`` beside it. Batches need at
least 2 rows (intra). ``cache_teacher`` as for ``kd``.
"""

from __future__ import annotations

from torch import Tensor, nn

from transferkit.losses import dist_parts
from transferkit.methods.base import Batch, Outputs, check_nonnegative, check_scale
from transferkit.methods.registry import METHODS
from transferkit.methods.teacher import TeacherMethod


@METHODS.register("dist", "Pearson correlation of teacher and student probabilities within each "
                  "sample and each class (Huang et al., NeurIPS 2022)")
class DIST(TeacherMethod):
    name = "dist"

    def __init__(
        self,
        teacher: nn.Module,
        beta: float = 2.0,
        gamma: float = 2.0,
        temperature: float = 4.0,
        inputs: str = "source",
        cache_teacher: bool | str = False,
        teacher_cache_dir: str | None = None,
        teacher_cache_max_gb: float | None = None,
    ) -> None:
        super().__init__(teacher, inputs, cache_teacher, teacher_cache_dir,
                         teacher_cache_max_gb)
        self.beta = check_nonnegative("beta", beta)
        self.gamma = check_nonnegative("gamma", gamma)
        self.temperature = check_scale("temperature", temperature)
        self.last: dict[str, Tensor] = {}

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        student, teacher = self.student_and_teacher(batch, out)
        inter, intra = dist_parts(student, teacher, self.temperature)
        self.last = {"inter": inter.detach(), "intra": intra.detach()}
        return {"dist": self.beta * inter + self.gamma * intra}

    def metrics(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.last.items()}
