"""DANN (Ganin & Lempitsky 2015): domain-adversarial training with gradient reversal.

A discriminator D learns to tell source features from target features,
``L_d = BCE(D(GRL(f(x_s))), 1) + BCE(D(GRL(f(x_t))), 0)`` (averaged); the gradient reversal
layer multiplies the gradient reaching the feature extractor by ``-lambda(p)``, with the
usual warm-up ``lambda(p) = trade_off * (2 / (1 + exp(-gamma p)) - 1)`` over progress p.
The class loss on labelled source data is a separate method: ``adapt`` composes
``[supervised, dann]``, so DANN with distillation is ``[kd, dann]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from transferkit.errors import ConfigError
from transferkit.losses import (
    DomainDiscriminator,
    GradientReversal,
    dann_warmup,
    domain_accuracy,
    domain_adversarial_loss,
)
from transferkit.methods.base import Batch, Method, Outputs, TrainInfo, check_count, check_positive


class DANN(Method):
    name = "dann"
    needs_features = True
    needs_target = True

    def __init__(
        self,
        trade_off: float = 1.0,
        hidden: int = 1024,
        gamma: float = 10.0,
        warmup: bool = True,
        warmup_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.trade_off = check_positive("trade_off", trade_off)
        self.gamma = check_positive("gamma", gamma)
        self.hidden = check_count("hidden", hidden)
        self.warmup = bool(warmup)
        self.warmup_steps = None if warmup_steps is None else check_count("warmup_steps",
                                                                          warmup_steps)
        self.total_steps = 1
        self.grl = GradientReversal()
        self.discriminator: DomainDiscriminator | None = None
        self._last_domain_logits: tuple[Tensor, Tensor] | None = None

    def setup(self, info: TrainInfo) -> None:
        self.total_steps = info.total_steps
        if info.feature_dim is None:
            raise ConfigError("dann needs the model's feature size; the model has no feature layer")
        if self.discriminator is None:
            self.discriminator = DomainDiscriminator(info.feature_dim, hidden=self.hidden)

    def coefficient(self, progress: float) -> float:
        """``trade_off * lambda(p)``; p runs over ``warmup_steps`` if given, else the run."""
        if not self.warmup:
            return self.trade_off
        if self.warmup_steps is not None:
            progress = min(1.0, progress * self.total_steps / self.warmup_steps)
        return self.trade_off * dann_warmup(progress, self.gamma)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert self.discriminator is not None, "call setup() first"
        assert out.features is not None and out.target_features is not None
        self.grl.coeff = self.coefficient(progress)
        n = out.features.shape[0]
        joint = out.joint_features  # avoids re-concatenating the two halves (and its backward)
        if joint is None:
            joint = torch.cat([out.features, out.target_features])
        domain_logits = self.discriminator(self.grl(joint))
        source_d, target_d = domain_logits[:n], domain_logits[n:]
        self._last_domain_logits = (source_d.detach(), target_d.detach())
        return {"domain": domain_adversarial_loss(source_d, target_d)}

    def metrics(self) -> dict[str, float]:
        """GRL coefficient and discriminator accuracy of the last step (0.5 = features aligned)."""
        if self._last_domain_logits is None:
            return {}
        return {
            "grl_coeff": float(self.grl.coeff),
            "domain_acc": float(domain_accuracy(*self._last_domain_logits)),
        }

