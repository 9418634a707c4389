"""Deep CORAL (Sun & Saenko, ECCV-W 2016): match second-order feature statistics.

``L = trade_off * ||C_s - C_t||_F^2 / (4 d^2)`` with ``C`` the (unbiased) covariance of each
domain's feature vectors in the batch (:func:`~transferkit.losses.coral_loss`).
"""

from __future__ import annotations

from torch import Tensor

from transferkit.losses import coral_loss
from transferkit.methods.base import Batch, Method, Outputs, check_nonnegative
from transferkit.methods.registry import METHODS


@METHODS.register("coral", "match source and target feature covariances, Deep CORAL "
                  "(Sun & Saenko, ECCV-W 2016)")
class CORAL(Method):
    name = "coral"
    needs_features = True
    needs_target = True

    def __init__(self, trade_off: float = 1.0) -> None:
        super().__init__()
        self.trade_off = check_nonnegative("trade_off", trade_off)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert out.features is not None and out.target_features is not None
        return {"coral": self.trade_off * coral_loss(out.features, out.target_features)}
