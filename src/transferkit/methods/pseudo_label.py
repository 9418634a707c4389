"""Pseudo-labelling (Lee, ICML-W 2013): train on the model's own confident target guesses.

``L = trade_off * ramp * mean_i m_i CE(z_t_i, y'_i)`` with ``y' = argmax softmax(z_t)`` and
``m_i = [max softmax(z_t_i) >= threshold]`` from the current model (no gradient through the
labels); ``class_balance`` widens the mask so that every predicted class keeps at least the
overall kept fraction of its rows (:func:`~transferkit.losses.confident_pseudo_labels`).
``ramp`` rises linearly to 1 over the first ``warmup`` fraction of training, while the model
is still poor on the target.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from transferkit.losses import confident_pseudo_labels
from transferkit.methods.base import (
    Batch,
    Method,
    Outputs,
    Progress,
    capped,
    check_flag,
    check_fraction,
    check_nonnegative,
)
from transferkit.methods.registry import METHODS


@METHODS.register("pseudo_label", "cross-entropy on confident target pseudo-labels, optional "
                  "class balance (Lee, ICML-W 2013)")
class PseudoLabel(Method):
    name = "pseudo_label"
    needs_target = True

    def __init__(
        self,
        trade_off: float = 1.0,
        threshold: float = 0.95,
        class_balance: bool = False,
        warmup: float = 0.0,
    ) -> None:
        super().__init__()
        self.trade_off = check_nonnegative("trade_off", trade_off)
        self.threshold = check_fraction("threshold", threshold)
        self.class_balance = check_flag(self.name, "class_balance", class_balance)
        self.warmup = check_fraction("warmup", warmup)
        self._kept: float | Tensor = 0.0

    def losses(self, batch: Batch, out: Outputs, progress: Progress) -> dict[str, Tensor]:
        assert out.target_logits is not None
        labels, mask = confident_pseudo_labels(
            out.target_logits.detach(), self.threshold, self.class_balance)
        self._kept = mask.float().mean().detach()  # read at metrics(): no sync per step
        ce = F.cross_entropy(out.target_logits, labels, reduction="none")
        ramp = capped(progress / self.warmup) if self.warmup > 0 else 1.0
        return {"pseudo_label": self.trade_off * ramp * (mask * ce).mean()}

    def metrics(self) -> dict[str, float]:
        """The share of the last target batch that passed the threshold."""
        return {"kept": float(self._kept)}
