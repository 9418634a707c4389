"""Relational knowledge distillation (Park et al., CVPR 2019, "Relational Knowledge
Distillation").

``L = weight * sum over pairs of (distance_weight * RKD-D + angle_weight * RKD-A)``: Huber
losses between the mean-normalised pairwise distances and between the triplet angle cosines
of the batch's embeddings (:func:`~transferkit.losses.rkd_loss`); the widths may differ.
Defaults as RepDistiller: the feature vector the head reads (``feat[-1]``, the ``features``
module), weight 1, distance_weight 25, angle_weight 50. RKD-A uses ``O(N^2 D)`` memory.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from transferkit.losses import rkd_loss
from transferkit.methods.base import check_nonnegative
from transferkit.methods.layered import LayerMethod
from transferkit.methods.registry import METHODS


@METHODS.register("rkd", "relational KD: match the batch's pairwise distances and triplet angles "
                  "of the embeddings (Park et al., CVPR 2019)")
class RelationalKD(LayerMethod):
    name = "rkd"
    default = "embedding"
    flatten = True
    default_weight = 1.0

    def __init__(
        self,
        teacher: nn.Module,
        weight: float | None = None,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        student_layers: Any = None,
        teacher_layers: Any = None,
        inputs: str = "source",
    ) -> None:
        super().__init__(teacher, weight, student_layers, teacher_layers, inputs)
        self.distance_weight = check_nonnegative("distance_weight", distance_weight)
        self.angle_weight = check_nonnegative("angle_weight", angle_weight)

    def pair_loss(self, index: int, student: Tensor, teacher: Tensor) -> Tensor:
        return rkd_loss(student, teacher, self.distance_weight, self.angle_weight)
