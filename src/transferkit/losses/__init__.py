"""Losses for distillation (weighted L2, soft targets) and domain adaptation (DANN)."""

from __future__ import annotations

from transferkit.losses.domain import (
    DomainDiscriminator,
    domain_accuracy,
    domain_adversarial_loss,
)
from transferkit.losses.grl import (
    GradientReversal,
    GradientReversalFunction,
    dann_warmup,
    grad_reverse,
)
from transferkit.losses.kd import soft_target_loss
from transferkit.losses.l2 import (
    REDUCTIONS,
    SCHEMES,
    check_reduction,
    check_scale,
    logit_rms,
    sample_weights,
    weighted_l2,
)

__all__ = [
    "REDUCTIONS",
    "SCHEMES",
    "DomainDiscriminator",
    "GradientReversal",
    "GradientReversalFunction",
    "check_reduction",
    "check_scale",
    "dann_warmup",
    "domain_accuracy",
    "domain_adversarial_loss",
    "grad_reverse",
    "logit_rms",
    "sample_weights",
    "soft_target_loss",
    "weighted_l2",
]
