"""BNM (Cui et al., CVPR 2020): batch nuclear-norm maximisation on target predictions.

``L = -trade_off * ||softmax(z_t)||_* / N``: a large nuclear norm of the ``N x K`` prediction
matrix means confident *and* diverse predictions (:func:`~transferkit.losses.bnm_loss`).
"""

from __future__ import annotations

from torch import Tensor

from transferkit.losses import bnm_loss
from transferkit.methods.base import Batch, Method, Outputs, check_nonnegative
from transferkit.methods.registry import METHODS


@METHODS.register("bnm", "batch nuclear-norm maximisation of target predictions "
                  "(Cui et al., CVPR 2020)")
class BNM(Method):
    name = "bnm"
    needs_target = True

    def __init__(self, trade_off: float = 1.0) -> None:
        super().__init__()
        self.trade_off = check_nonnegative("trade_off", trade_off)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert out.target_logits is not None
        return {"bnm": self.trade_off * bnm_loss(out.target_logits)}
