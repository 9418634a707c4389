"""The seed article's distillation objective: weighted squared L2 between logits.

``L = sum_i w_i * ||t_i - s_i||^2 / scale`` over the batch (``reduction="sum"``; with
``"mean"`` the squared norm is divided by the number of classes ``C``), with the weights from
:func:`sample_weights` (``1/N`` each by default). ``reduction="sum", scale=1`` is the article's
formula exactly; :func:`logit_rms` measures a teacher's logit size, for the ``l2`` method's
``scale="auto"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from transferkit.errors import ConfigError
from transferkit.losses._checks import check_same_shape

SCHEMES = ("uniform", "confidence", "class_balance")
REDUCTIONS = ("sum", "mean")


def check_reduction(reduction: object) -> str:
    """``reduction`` must be one of :data:`REDUCTIONS`."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


def check_scale(scale: object, allow_auto: bool = False) -> float | str:
    """``scale`` must be a finite number > 0 (or ``"auto"`` where ``allow_auto``)."""
    if allow_auto and scale == "auto":
        return "auto"
    what = "a finite number > 0" + (' or "auto"' if allow_auto else "")
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise ConfigError(f"scale must be {what}, got {scale!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be {what}, got {scale!r}")
    return float(scale)


def weighted_l2(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weights: Tensor | None = None,
    *,
    reduction: str = "sum",
    scale: float = 1.0,
) -> Tensor:
    """``sum_i w_i * d_i / scale``; ``w_i = 1/N`` when ``weights`` is None.

    ``d_i = ||t_i - s_i||^2`` (``reduction="sum"``, the default: the article's formula) or
    ``||t_i - s_i||^2 / C`` (``"mean"``). Unweighted, ``"mean"`` with ``scale=1`` is
    ``F.mse_loss`` and ``"sum"`` is ``C`` times it. Pass the teacher's logits detached (or
    computed under ``no_grad``).
    """
    check_same_shape(student_logits, teacher_logits)
    check_reduction(reduction)
    factor = float(check_scale(scale))
    squares = (teacher_logits - student_logits).pow(2).flatten(1)
    per_sample = squares.sum(dim=1) if reduction == "sum" else squares.mean(dim=1)
    if factor != 1.0:
        per_sample = per_sample / factor
    if weights is None:
        return per_sample.mean() if per_sample.numel() else per_sample.sum()
    if weights.shape != per_sample.shape:
        raise ConfigError(
            f"weights have shape {tuple(weights.shape)}, expected one per sample "
            f"({per_sample.shape[0]},)"
        )
    return (weights.to(per_sample.dtype) * per_sample).sum()


@torch.no_grad()
def logit_rms(logits: Tensor) -> float:
    """Root mean square of ``logits`` over all entries (rows and classes), in float64.

    The ``l2`` method's ``scale="auto"`` is ``max(1, logit_rms(teacher logits))``. Empty
    logits give 0.
    """
    if logits.numel() == 0:
        return 0.0
    return float(logits.detach().double().pow(2).mean().sqrt().item())


@torch.no_grad()
def sample_weights(
    scheme: str,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    class_counts: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """Per-sample weights ``w`` (shape ``N``, sum 1, no gradient) for :func:`weighted_l2`.

    - ``uniform``: ``w_i = 1/N``.
    - ``confidence``: ``w_i ∝ max_c softmax(t_i)_c``; samples the teacher is sure of count more.
    - ``class_balance``: ``w_i ∝ 1 / count(y_i)`` with ``count`` the training set's per-class
      counts (``class_counts``) and ``y_i`` the label, or the teacher's argmax when ``labels``
      is None; each class then carries weight in proportion to its batch share divided by its
      dataset frequency, countering imbalance. Counts below 1 are read as 1.
    """
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unknown weighting scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}"
        )
    if teacher_logits.dim() != 2:
        raise ConfigError(f"teacher logits must be N x C, got shape {tuple(teacher_logits.shape)}")
    logits = teacher_logits.detach()
    n, num_classes = logits.shape
    dtype = logits.dtype if logits.is_floating_point() else torch.float32
    if n == 0:
        return torch.zeros(0, dtype=dtype, device=logits.device)
    if scheme == "uniform":
        return torch.full((n,), 1.0 / n, dtype=dtype, device=logits.device)
    if scheme == "confidence":
        raw = torch.softmax(logits.to(dtype), dim=1).amax(dim=1)
    else:
        if class_counts is None:
            raise ConfigError(
                "weighting 'class_balance' needs class_counts (the training set's per-class counts)"
            )
        counts = torch.as_tensor(class_counts, device=logits.device).to(dtype).flatten()
        if counts.numel() < num_classes:
            raise ConfigError(
                f"class_counts has {counts.numel()} entries but the teacher predicts "
                f"{num_classes} classes"
            )
        if labels is None:
            classes = logits.argmax(dim=1)
        else:
            classes = labels.to(device=logits.device, dtype=torch.long).flatten()
            if classes.shape[0] != n:
                raise ConfigError(f"got {classes.shape[0]} labels for {n} teacher logits")
            if classes.numel() and (classes.min() < 0 or classes.max() >= counts.numel()):
                raise ConfigError(f"labels must lie in 0..{counts.numel() - 1}")
        raw = 1.0 / counts.clamp(min=1.0)[classes]
    return raw / raw.sum()
