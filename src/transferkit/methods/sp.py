"""Similarity-preserving KD (Tung & Mori, ICCV 2019, "Similarity-Preserving Knowledge
Distillation").

``L = weight * sum over pairs of ||G~_s - G~_t||_F^2 / N^2``, ``G = F F^T`` the batch's
N x N Gram matrix of the flattened features with L2-normalised rows
(:func:`~transferkit.losses.sp_loss`); the widths may differ. Defaults as RepDistiller: the last
stage's map (``feat[-2]``), weight 3000.
"""

from __future__ import annotations

from torch import Tensor

from transferkit.losses import sp_loss
from transferkit.methods.layered import LayerMethod
from transferkit.methods.registry import METHODS


@METHODS.register("sp", "similarity preserving: match the batch's normalised Gram matrices of the "
                  "last stage (Tung & Mori, ICCV 2019)")
class SimilarityPreserving(LayerMethod):
    name = "sp"
    default = "last"
    default_weight = 3000.0

    def pair_loss(self, index: int, student: Tensor, teacher: Tensor) -> Tensor:
        return sp_loss(student, teacher)
