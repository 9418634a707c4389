"""Losses for distillation (weighted L2, soft targets, features, relations) and domain adaptation
(adversarial, discrepancy, regularisers, self-training)."""

from __future__ import annotations

from transferkit.losses.adversarial import (
    RandomizedMultilinear,
    classifier_discrepancy,
    entropy_weights,
    mdd_loss,
    multilinear_map,
    weighted_domain_loss,
)
from transferkit.losses.discrepancy import (
    afn_loss,
    bnm_loss,
    bsp_loss,
    coral_loss,
    gaussian_kernels,
    jmmd,
    mcc_loss,
    mk_mmd,
)
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
from transferkit.losses.selftraining import (
    confident_pseudo_labels,
    entropy,
    fixmatch_loss,
    information_maximization,
    mean_entropy,
    shot_cluster_labels,
)

__all__ = [
    "REDUCTIONS",
    "SCHEMES",
    "DomainDiscriminator",
    "GradientReversal",
    "GradientReversalFunction",
    "RandomizedMultilinear",
    "afn_loss",
    "at_loss",
    "attention_map",
    "bnm_loss",
    "bsp_loss",
    "cc_loss",
    "cc_matrix",
    "check_reduction",
    "check_scale",
    "classifier_discrepancy",
    "confident_pseudo_labels",
    "coral_loss",
    "dann_warmup",
    "dist_loss",
    "dist_parts",
    "dkd_loss",
    "dkd_parts",
    "domain_accuracy",
    "domain_adversarial_loss",
    "entropy",
    "entropy_weights",
    "fixmatch_loss",
    "gaussian_kernels",
    "grad_reverse",
    "hint_loss",
    "information_maximization",
    "jmmd",
    "logit_rms",
    "match_spatial",
    "mcc_loss",
    "mdd_loss",
    "mean_entropy",
    "mk_mmd",
    "multilinear_map",
    "nst_loss",
    "pkt_loss",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
    "sample_weights",
    "shot_cluster_labels",
    "soft_target_loss",
    "sp_loss",
    "standardize_logits",
    "standardized_kd_loss",
    "weighted_domain_loss",
    "weighted_l2",
]
