"""Losses for distillation (weighted L2, soft targets) and domain adaptation (DANN)."""

from __future__ import annotations

from transferkit.losses.domain import (
    DomainDiscriminator,
    domain_accuracy,
    domain_adversarial_loss,
)
from transferkit.losses.features import (
    at_loss,
    attention_map,
    hint_loss,
    match_spatial,
    nst_loss,
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
from transferkit.losses.logits import (
    dist_loss,
    dist_parts,
    dkd_loss,
    dkd_parts,
    standardize_logits,
    standardized_kd_loss,
)
from transferkit.losses.relations import (
    cc_loss,
    cc_matrix,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    sp_loss,
)

__all__ = [
    "REDUCTIONS",
    "SCHEMES",
    "DomainDiscriminator",
    "GradientReversal",
    "GradientReversalFunction",
    "at_loss",
    "attention_map",
    "cc_loss",
    "cc_matrix",
    "check_reduction",
    "check_scale",
    "dann_warmup",
    "dist_loss",
    "dist_parts",
    "dkd_loss",
    "dkd_parts",
    "domain_accuracy",
    "domain_adversarial_loss",
    "grad_reverse",
    "hint_loss",
    "logit_rms",
    "match_spatial",
    "nst_loss",
    "pkt_loss",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
    "sample_weights",
    "soft_target_loss",
    "sp_loss",
    "standardize_logits",
    "standardized_kd_loss",
    "weighted_l2",
]
