"""MCC (Jin et al., ECCV 2020): minimum class confusion on target predictions.

``L = trade_off * (sum(C) - tr(C)) / K`` where ``C`` is the entropy-weighted, row-normalised
class correlation ``p^T diag(w) p`` of the target predictions ``p = softmax(z_t / T)``
(:func:`~transferkit.losses.mcc_loss`); the paper's ``T = 2.5``.
"""

from __future__ import annotations

from torch import Tensor

from transferkit.losses import mcc_loss
from transferkit.methods.base import (
    Batch,
    Method,
    Outputs,
    check_nonnegative,
    check_scale,
)
from transferkit.methods.registry import METHODS


@METHODS.register("mcc", "minimum class confusion on target predictions "
                  "(Jin et al., ECCV 2020)")
class MCC(Method):
    name = "mcc"
    needs_target = True

    def __init__(self, trade_off: float = 1.0, temperature: float = 2.5) -> None:
        super().__init__()
        self.trade_off = check_nonnegative("trade_off", trade_off)
        self.temperature = check_scale("temperature", temperature)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert out.target_logits is not None
        return {"mcc": self.trade_off * mcc_loss(out.target_logits, self.temperature)}
