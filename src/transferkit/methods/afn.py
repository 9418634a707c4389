"""Stepwise AFN (Xu et al., ICCV 2019): larger feature norms transfer better.

``L = weight * (L_afn(f(x_s)) + L_afn(f(x_t)))`` with
``L_afn(h) = mean_i (||h_i||.detach() + radius_step - ||h_i||)^2``: each step pushes every
feature norm up by ``radius_step`` (:func:`~transferkit.losses.afn_loss`). The paper's
``weight = 0.05`` and ``radius_step = 1``.
"""

from __future__ import annotations

from torch import Tensor

from transferkit.losses import afn_loss
from transferkit.methods.base import Batch, Method, Outputs, check_nonnegative, check_positive
from transferkit.methods.registry import METHODS


@METHODS.register("afn", "stepwise adaptive feature norm (Xu et al., ICCV 2019)")
class AFN(Method):
    name = "afn"
    needs_features = True
    needs_target = True

    def __init__(self, weight: float = 0.05, radius_step: float = 1.0) -> None:
        super().__init__()
        self.weight = check_nonnegative("weight", weight)
        self.radius_step = check_positive("radius_step", radius_step)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert out.features is not None and out.target_features is not None
        both = afn_loss(out.features, self.radius_step) + afn_loss(
            out.target_features, self.radius_step)
        return {"afn": self.weight * both}
