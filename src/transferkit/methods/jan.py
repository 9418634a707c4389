"""JAN (Long et al., ICML 2017): align the joint distribution of features and predictions.

``L = trade_off * JMMD^2`` where the kernel of a pair of rows is the product of a
multi-kernel Gaussian on the feature vectors and a Gaussian on the softmax predictions
(:func:`~transferkit.losses.jmmd`); each layer's bandwidth comes from its own batch.
"""

from __future__ import annotations

from torch import Tensor

from transferkit.losses import jmmd
from transferkit.losses.discrepancy import DEFAULT_KERNEL_MULTIPLIERS, _multipliers
from transferkit.methods.base import Batch, Method, Outputs, check_flag, check_nonnegative
from transferkit.methods.registry import METHODS


@METHODS.register("jan", "joint MMD over features and predictions (Long et al., ICML 2017)")
class JAN(Method):
    name = "jan"
    needs_features = True
    needs_target = True

    def __init__(
        self,
        trade_off: float = 1.0,
        kernel_multipliers: list[float] | tuple[float, ...] = DEFAULT_KERNEL_MULTIPLIERS,
        prediction_multipliers: list[float] | tuple[float, ...] = (1.0,),
        linear: bool = False,
    ) -> None:
        super().__init__()
        self.trade_off = check_nonnegative("trade_off", trade_off)
        self.multipliers = (_multipliers(kernel_multipliers, "jan"),
                            _multipliers(prediction_multipliers, "jan", "prediction_multipliers"))
        self.linear = check_flag(self.name, "linear", linear)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert out.features is not None and out.target_features is not None
        assert out.target_logits is not None
        source = [out.features, out.logits.softmax(1)]
        target = [out.target_features, out.target_logits.softmax(1)]
        return {"jan": self.trade_off * jmmd(source, target, self.multipliers, self.linear)}
