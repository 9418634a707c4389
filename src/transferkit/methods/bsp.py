"""BSP (Chen et al., ICML 2019): batch spectral penalisation.

``L = trade_off * sum_{i<=k} (sigma_i(F_s)^2 + sigma_i(F_t)^2)``, the ``k`` largest singular
values of each domain's ``N x d`` feature matrix: adversarial alignment inflates a few
directions, which hurts discriminability. A regulariser, meant beside an aligner
(``dann+bsp``, ``cdan+bsp``); the paper's ``trade_off = 1e-4``, ``k = 1``.
"""

from __future__ import annotations

from torch import Tensor

from transferkit.losses import bsp_loss
from transferkit.methods.base import Batch, Method, Outputs, check_count, check_nonnegative
from transferkit.methods.registry import METHODS


@METHODS.register("bsp", "batch spectral penalisation of the top singular values, beside an "
                  "aligner such as dann+bsp (Chen et al., ICML 2019)")
class BSP(Method):
    name = "bsp"
    needs_features = True
    needs_target = True

    def __init__(self, trade_off: float = 1e-4, k: int = 1) -> None:
        super().__init__()
        self.trade_off = check_nonnegative("trade_off", trade_off)
        self.k = check_count("k", k)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert out.features is not None and out.target_features is not None
        return {"bsp": self.trade_off * bsp_loss(out.features, out.target_features, self.k)}
