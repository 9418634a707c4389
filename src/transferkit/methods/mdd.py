"""MDD (Zhang et al., ICML 2019): margin disparity discrepancy with an adversarial head.

An adversarial head ``f'`` (``Linear-ReLU-Dropout-Linear``) reads the feature vector through
gradient reversal (the warm-up of :mod:`dann`). With ``y' = argmax`` of the main head,
``f'`` minimises ``margin * CE(f'(x_s), y'_s) - log(1 - softmax(f'(x_t))[y'_t])``: agree with
the main head on source, disagree on target; the features, through the reversal, make that
impossible (:func:`~transferkit.losses.mdd_loss`). The paper's ``margin = 4``; as in its
code, the reversal coefficient warms up to ``grl_max = 0.1``, not 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import GradientReversal, dann_warmup, mdd_loss
from transferkit.methods.base import (
    Batch,
    Method,
    Outputs,
    Progress,
    TrainInfo,
    check_count_at_most,
    check_flag,
    check_positive,
)
from transferkit.methods.dann import MAX_WIDTH, WIDTH_WHY
from transferkit.methods.registry import METHODS


@METHODS.register("mdd", "margin disparity discrepancy with an adversarial head "
                  "(Zhang et al., ICML 2019)")
class MDD(Method):
    name = "mdd"
    needs_features = True
    needs_target = True

    def __init__(
        self,
        trade_off: float = 1.0,
        margin: float = 4.0,
        hidden: int = 1024,
        gamma: float = 10.0,
        warmup: bool = True,
        grl_max: float = 0.1,
    ) -> None:
        super().__init__()
        self.trade_off = check_positive("trade_off", trade_off)
        self.grl_max = check_positive("grl_max", grl_max)
        self.margin = check_positive("margin", margin)
        self.gamma = check_positive("gamma", gamma)
        self.hidden = check_count_at_most(self.name, "hidden", hidden, MAX_WIDTH, WIDTH_WHY)
        self.warmup = check_flag(self.name, "warmup", warmup)
        if not self.warmup and gamma != 10.0:
            raise ConfigError(f"{self.name}: gamma shapes the warm-up, which warmup=false turns "
                              "off; drop gamma or warmup=false")
        self.grl = GradientReversal()
        self.adversary: nn.Module | None = None

    def setup(self, info: TrainInfo) -> None:
        if info.feature_dim is None:
            raise ConfigError("mdd needs the model's feature size; the model has no feature "
                              "layer")
        if self.adversary is None:
            self.adversary = nn.Sequential(
                nn.Linear(info.feature_dim, self.hidden), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(self.hidden, info.num_classes))

    def losses(self, batch: Batch, out: Outputs, progress: Progress) -> dict[str, Tensor]:
        assert self.adversary is not None, "call setup() first"
        assert out.features is not None and out.target_features is not None
        assert out.target_logits is not None
        warm = dann_warmup(progress, self.gamma) if self.warmup else 1.0
        self.grl.coeff = self.grl_max * warm
        n = out.features.shape[0]
        joint = out.joint_features
        if joint is None:
            joint = torch.cat([out.features, out.target_features])
        adversarial = self.adversary(self.grl(joint))
        loss = mdd_loss(out.logits, adversarial[:n], out.target_logits, adversarial[n:],
                        self.margin)
        return {"mdd": self.trade_off * loss}

    def metrics(self) -> dict[str, float]:
        return {"grl_coeff": float(self.grl.coeff)}
