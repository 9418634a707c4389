"""DAN (Long et al., ICML 2015): align source and target features by multi-kernel MMD.

``L = trade_off * MK-MMD^2(f(x_s), f(x_t))`` on the feature vector (the head's input), with
Gaussian kernels at ``kernel_multipliers`` times the batch's mean squared distance
(:func:`~transferkit.losses.mk_mmd`); ``linear=true`` is the linear-time estimator (equal,
even source and target batch sizes).
"""

from __future__ import annotations

from torch import Tensor

from transferkit.losses import mk_mmd
from transferkit.losses.discrepancy import DEFAULT_KERNEL_MULTIPLIERS, _multipliers
from transferkit.methods.base import Batch, Method, Outputs, check_flag, check_nonnegative
from transferkit.methods.registry import METHODS


@METHODS.register("dan", "multi-kernel MMD between source and target features "
                  "(Long et al., ICML 2015)")
class DAN(Method):
    name = "dan"
    needs_features = True
    needs_target = True

    def __init__(
        self,
        trade_off: float = 1.0,
        kernel_multipliers: list[float] | tuple[float, ...] = DEFAULT_KERNEL_MULTIPLIERS,
        linear: bool = False,
    ) -> None:
        super().__init__()
        self.trade_off = check_nonnegative("trade_off", trade_off)
        self.kernel_multipliers = _multipliers(kernel_multipliers, "dan")
        self.linear = check_flag(self.name, "linear", linear)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert out.features is not None and out.target_features is not None
        mmd = mk_mmd(out.features, out.target_features, self.kernel_multipliers, self.linear)
        return {"dan": self.trade_off * mmd}
