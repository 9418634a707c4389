"""Adversarial domain-adaptation losses beyond DANN: CDAN conditioning, entropy weights,
weighted domain loss, MDD and the MCD classifier discrepancy.

Like :func:`~transferkit.losses.domain.domain_adversarial_loss`, these functions do not insert
a gradient reversal layer themselves: the caller puts
:func:`~transferkit.losses.grl.grad_reverse` where the method needs it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses._checks import check_count, checking_values


def _check_matrix(name: str, x: Tensor, min_rows: int = 1) -> None:
    """``x`` must be a 2-d ``N x K`` tensor with ``N >= min_rows`` and ``K >= 1``."""
    if x.dim() != 2:
        raise ConfigError(f"{name} must be N x K (2-d), got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows or x.shape[1] < 1:
        raise ConfigError(
            f"{name} needs at least {min_rows} row(s) and one column, got shape {tuple(x.shape)}"
        )


def _check_same_rows(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise ConfigError(
            f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} have different batch "
            "sizes; pass one row per sample to both"
        )


# ------------------------------------------------------------------------- CDAN conditioning


def multilinear_map(features: Tensor, predictions: Tensor) -> Tensor:
    """CDAN's multilinear conditioning ``f ⊗ g`` flattened to ``N x (d * C)``.

    Long et al., NeurIPS 2018, "Conditional Adversarial Domain Adaptation". Row ``n`` of the
    result is the outer product ``f_n g_n^T`` (``d x C``) flattened row-major, so entry
    ``i * C + k`` is ``f_n[i] * g_n[k]``. ``predictions`` are the classifier's softmax outputs;
    CDAN passes them detached (``g.detach()``), this function detaches neither input.
    """
    _check_matrix("features", features)
    _check_matrix("predictions", predictions)
    _check_same_rows("features", features, "predictions", predictions)
    return (features.unsqueeze(2) * predictions.unsqueeze(1)).flatten(1)


class RandomizedMultilinear(nn.Module):
    """CDAN's randomized multilinear map for large ``d * C``:
    ``T(f, g) = (f R_f) ⊙ (g R_g) / sqrt(out)``, shape ``N x out``.

    ``R_f`` (``d x out``) and ``R_g`` (``C x out``) have i.i.d. standard Gaussian entries,
    drawn once from a ``torch.Generator`` seeded with ``seed``; they are buffers (not
    trained, but saved in the ``state_dict`` and moved by ``.to()``), so a checkpoint keeps
    the map it was trained with. In expectation over ``R`` the map preserves inner products:
    ``E <T(f, g), T(f', g')> = <f, f'> <g, g'> = <f ⊗ g, f' ⊗ g'>``.
    """

    def __init__(
        self, feature_dim: int, num_classes: int, output_dim: int = 1024, seed: int = 0
    ) -> None:
        super().__init__()
        self.feature_dim = check_count("feature_dim", feature_dim)
        self.num_classes = check_count("num_classes", num_classes)
        self.output_dim = check_count("output_dim", output_dim)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("r_f", torch.randn(feature_dim, output_dim, generator=generator))
        self.register_buffer("r_g", torch.randn(num_classes, output_dim, generator=generator))

    def forward(self, features: Tensor, predictions: Tensor) -> Tensor:
        _check_matrix("features", features)
        _check_matrix("predictions", predictions)
        _check_same_rows("features", features, "predictions", predictions)
        if features.shape[1] != self.feature_dim or predictions.shape[1] != self.num_classes:
            raise ConfigError(
                f"randomized multilinear map expects features N x {self.feature_dim} and "
                f"predictions N x {self.num_classes}, got {tuple(features.shape)} and "
                f"{tuple(predictions.shape)}"
            )
        r_f = self.r_f.to(dtype=features.dtype)
        r_g = self.r_g.to(dtype=predictions.dtype)
        return (features @ r_f) * (predictions @ r_g) / math.sqrt(self.output_dim)

    def extra_repr(self) -> str:
        return (
            f"feature_dim={self.feature_dim}, num_classes={self.num_classes}, "
            f"output_dim={self.output_dim}"
        )


def entropy_weights(predictions_probs: Tensor) -> Tensor:
    """CDAN+E sample weights ``w_i = 1 + exp(-H(g_i))``, detached, rescaled to mean 1.

    ``H(g) = -sum_c g_c log g_c`` (natural log, ``0 log 0 = 0``) of each row of softmax
    probabilities. Confident rows (low entropy) get weights near 2, uniform rows near
    ``1 + 1/C``. The weights are then multiplied by ``N / sum_i w_i``, so they sum to the batch
    size ``N`` (mean 1), as TLlib does. Call it once per domain, on that domain's batch alone:
    the normalisation is per call, which gives each domain the same total weight.
    """
    _check_matrix("predictions_probs", predictions_probs)
    with torch.no_grad():
        p = predictions_probs.detach()
        row_sums = p.sum(dim=1)
        if checking_values() and (bool((p < 0).any()) or not torch.allclose(
            row_sums, torch.ones_like(row_sums), atol=1e-3
        )):
            raise ConfigError(
                f"entropy_weights needs probabilities (non-negative rows summing to 1) of shape "
                f"{tuple(p.shape)}; apply softmax to the logits first"
            )
        log_p = torch.where(p > 0, p.log(), torch.zeros_like(p))
        h = -(p * log_p).sum(dim=1)
        w = 1.0 + torch.exp(-h)
        return w * (w.numel() / w.sum())


def _weighted_bce(logits: Tensor, target: float, weights: Tensor | None, what: str) -> Tensor:
    z = logits.flatten()
    losses = F.binary_cross_entropy_with_logits(z, torch.full_like(z, target), reduction="none")
    if weights is None:
        return losses.mean()
    if weights.numel() != z.numel():
        raise ConfigError(
            f"{what} weights {tuple(weights.shape)} do not match the {what} domain logits "
            f"{tuple(logits.shape)}; pass one weight per sample"
        )
    w = weights.flatten().to(dtype=losses.dtype)
    total = w.sum()
    if checking_values() and (bool((w < 0).any()) or not bool(total > 0)):
        raise ConfigError(f"{what} weights must be >= 0 with a positive sum")
    return (w * losses).sum() / total


def weighted_domain_loss(
    source_logits: Tensor,
    target_logits: Tensor,
    source_weights: Tensor | None = None,
    target_weights: Tensor | None = None,
) -> Tensor:
    """``(sum_i w_i BCE(d_s_i, 1) / sum_i w_i + sum_j v_j BCE(d_t_j, 0) / sum_j v_j) / 2``.

    The per-sample weighted domain-classifier loss of CDAN+E (weights from
    :func:`entropy_weights`). Each domain's term is a weighted mean, so it does not change if
    that domain's weights are scaled; weights of ``None`` mean uniform, and then the loss equals
    :func:`~transferkit.losses.domain.domain_adversarial_loss`. Weights are used as given:
    pass them detached.
    """
    if source_logits.numel() == 0 or target_logits.numel() == 0:
        raise ConfigError("domain loss needs at least one source and one target sample")
    loss_s = _weighted_bce(source_logits, 1.0, source_weights, "source")
    loss_t = _weighted_bce(target_logits, 0.0, target_weights, "target")
    return 0.5 * (loss_s + loss_t)


# ----------------------------------------------------------------------------------- MDD


def _log_one_minus_softmax_at(logits: Tensor, labels: Tensor) -> Tensor:
    """``log(1 - softmax(z)_y)`` per row, as ``logsumexp_{k != y} z_k - logsumexp_k z_k``.

    Exact and finite even where ``softmax(z)_y`` rounds to 1, where ``log(1 - p)`` would need
    a clamp (and would lose its gradient).
    """
    others = logits.scatter(1, labels.unsqueeze(1), float("-inf"))
    return torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1)


def mdd_loss(
    source_main_logits: Tensor,
    source_adv_logits: Tensor,
    target_main_logits: Tensor,
    target_adv_logits: Tensor,
    margin: float = 4.0,
) -> Tensor:
    """Margin disparity discrepancy (Zhang et al., ICML 2019, "Bridging Theory and Algorithm
    for Domain Adaptation"), in the form the adversarial head *minimises*:

    ``margin * mean_i CE(f'(x_s_i), y_s_i') + mean_j -log(1 - softmax(f'(x_t_j))[y_t_j'])``

    with pseudo labels ``y' = argmax`` of the main head ``f`` (no gradient). The adversary
    ``f'`` minimising it agrees with ``f`` on the source and disagrees on the target, i.e. it
    maximises the disparity; the feature extractor must do the opposite, so the caller feeds
    ``f'`` the features through a gradient reversal layer and *adds* this value to the total
    loss: ``f'`` descends it, the features (through the GRL) ascend it. ``margin`` is the
    paper's ``gamma`` (a larger value enforces a larger margin).
    ``log(1 - p)`` is computed exactly in log-space, so no clamp is needed.
    """
    names = ("source_main_logits", "source_adv_logits", "target_main_logits", "target_adv_logits")
    tensors = (source_main_logits, source_adv_logits, target_main_logits, target_adv_logits)
    for name, t in zip(names, tensors, strict=True):
        _check_matrix(name, t)
    if source_main_logits.shape != source_adv_logits.shape:
        raise ConfigError(
            f"source_main_logits {tuple(source_main_logits.shape)} and source_adv_logits "
            f"{tuple(source_adv_logits.shape)} differ; both heads must output N x num_classes"
        )
    if target_main_logits.shape != target_adv_logits.shape:
        raise ConfigError(
            f"target_main_logits {tuple(target_main_logits.shape)} and target_adv_logits "
            f"{tuple(target_adv_logits.shape)} differ; both heads must output N x num_classes"
        )
    if source_main_logits.shape[1] != target_main_logits.shape[1]:
        raise ConfigError(
            f"source logits {tuple(source_main_logits.shape)} and target logits "
            f"{tuple(target_main_logits.shape)} have different numbers of classes"
        )
    if source_main_logits.shape[1] < 2:
        raise ConfigError(
            f"mdd_loss needs at least 2 classes, got logits of shape "
            f"{tuple(source_main_logits.shape)}"
        )
    ok = not isinstance(margin, bool) and isinstance(margin, int | float)
    if not ok or not math.isfinite(margin) or margin <= 0:
        raise ConfigError(f"margin must be a finite number > 0, got {margin!r}")
    with torch.no_grad():
        y_s = source_main_logits.argmax(dim=1)
        y_t = target_main_logits.argmax(dim=1)
    loss_s = F.cross_entropy(source_adv_logits, y_s)
    loss_t = -_log_one_minus_softmax_at(target_adv_logits, y_t).mean()
    return float(margin) * loss_s + loss_t


# ----------------------------------------------------------------------------------- MCD


def classifier_discrepancy(probs1: Tensor, probs2: Tensor) -> Tensor:
    """MCD's discrepancy ``mean_{i,c} |p1_ic - p2_ic|`` of two classifiers' softmax outputs.

    Saito et al., CVPR 2018, "Maximum Classifier Discrepancy for Unsupervised Domain
    Adaptation". The classifiers maximise it on target data (step B), the feature extractor
    minimises it (step C); the mean runs over rows and classes, as in the paper's code.
    """
    _check_matrix("probs1", probs1)
    if probs1.shape != probs2.shape:
        raise ConfigError(
            f"probs1 {tuple(probs1.shape)} and probs2 {tuple(probs2.shape)} differ; both "
            "classifiers must output N x num_classes for the same samples"
        )
    return (probs1 - probs2).abs().mean()
