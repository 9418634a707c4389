"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

``L = weight * sum over pairs of mean_{i,k} (Q^s_ik - Q^t_ik)^2`` with the spatial attention
``Q = normalize(vec(mean_c |A_c|^p))`` (:func:`~transferkit.losses.at_loss`); channel counts
may differ and a larger map is pooled to the smaller one's size. Defaults as RepDistiller:
every stage (``feat[1:-1]``), p = 2, weight 1000 (summed over the stages, as RepDistiller
and every layer method here do). Needs ``C x H x W`` feature maps.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from transferkit.losses import at_loss
from transferkit.methods.base import check_positive
from transferkit.methods.layered import LayerMethod
from transferkit.methods.registry import METHODS


@METHODS.register("at", "attention transfer: match normalised spatial attention maps of every "
                  "stage (Zagoruyko & Komodakis, ICLR 2017)")
class AttentionTransfer(LayerMethod):
    name = "at"
    default = "stages"
    needs_maps = True
    default_weight = 1000.0

    def __init__(
        self,
        teacher: nn.Module,
        weight: float | None = None,
        p: float = 2.0,
        student_layers: Any = None,
        teacher_layers: Any = None,
        inputs: str = "source",
    ) -> None:
        super().__init__(teacher, weight, student_layers, teacher_layers, inputs)
        self.p = check_positive("p", p)

    def pair_loss(self, index: int, student: Tensor, teacher: Tensor) -> Tensor:
        return at_loss(student, teacher, self.p)
