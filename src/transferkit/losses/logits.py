"""Logit-based distillation losses: logit standardisation, decoupled KD (DKD) and DIST.

All functions are pure: no learnable parameters, differentiable in the student's logits. Like
:func:`~transferkit.losses.kd.soft_target_loss` they do not detach the teacher; pass its
logits detached (or computed under ``no_grad``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from transferkit.errors import ConfigError
from transferkit.losses._checks import check_number, check_same_shape, checking_values
from transferkit.losses.kd import soft_target_loss


def _check_logits(student: Tensor, teacher: Tensor, what: str, min_batch: int = 1) -> None:
    """Same ``N x C`` shape, at least two classes and ``min_batch`` samples."""
    check_same_shape(student, teacher)
    if student.dim() != 2:
        raise ConfigError(
            f"{what} needs N x num_classes logits, got shape {tuple(student.shape)}; "
            "flatten the extra dimensions into the batch first"
        )
    n, c = student.shape
    if c < 2:
        raise ConfigError(f"{what} needs at least 2 classes, got logits of shape {(n, c)}")
    if n < min_batch:
        raise ConfigError(
            f"{what} needs a batch of at least {min_batch} samples, got logits of shape "
            f"{(n, c)}; use a larger batch "
            "(batch_size; CLI: --batch-size)"
        )


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``sum_c p_c (log p_c - log q_c)`` per row; entries with ``p_c = 0`` contribute 0."""
    p = log_p.exp()
    diff = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_q))
    return (p * diff).sum(dim=1)


# ---------------------------------------------------------------- logit standardisation


def standardize_logits(z: Tensor, eps: float = 1e-7, *, unbiased: bool = True) -> Tensor:
    """Z-score each sample's logits over the classes (last dimension): ``(z - mean) / (std + eps)``.

    Sun et al., CVPR 2024, "Logit Standardization in Knowledge Distillation". The paper writes
    the population standard deviation (divide by ``C``); its reference code uses
    ``Tensor.std``, the sample standard deviation (divide by ``C - 1``). The default follows
    the code (``unbiased=True``); ``unbiased=False`` gives the paper's formula. The two differ
    by the constant factor ``sqrt(C / (C - 1))``, which a different base temperature absorbs.
    The result is invariant to adding a constant to a row and (up to ``eps``) to scaling it by
    a positive factor.
    """
    if z.dim() < 1 or z.shape[-1] < 2:
        raise ConfigError(
            f"standardize_logits needs at least 2 classes in the last dimension, got shape "
            f"{tuple(z.shape)}"
        )
    eps = check_number("eps", eps, positive=False)
    mean = z.mean(dim=-1, keepdim=True)
    std = z.std(dim=-1, keepdim=True, unbiased=unbiased)
    return (z - mean) / (std + eps)


def standardized_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 2.0,
    eps: float = 1e-7,
) -> Tensor:
    """Hinton's KD on standardised logits: ``soft_target_loss(Z(s), Z(t), T)``.

    ``Z`` is :func:`standardize_logits` (sample std, as the reference code). With
    standardisation ``T`` is a *base* temperature: the effective temperature of each sample is
    ``T * std(z_i)``. The default ``T = 2`` is the paper's CIFAR-100 setting for KD; the loss
    is batch-mean KL times ``T^2``.
    """
    check_same_shape(student_logits, teacher_logits)
    return soft_target_loss(
        standardize_logits(student_logits, eps),
        standardize_logits(teacher_logits, eps),
        temperature,
    )


# ---------------------------------------------------------------- decoupled KD


def _check_labels(labels: Tensor, n: int, c: int) -> Tensor:
    """One integer class index in ``[0, C)`` per sample, returned as int64."""
    if labels.shape != (n,) or labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ConfigError(
            f"labels must be {n} integer class indices (shape ({n},)), got shape "
            f"{tuple(labels.shape)} of {labels.dtype}; pass the hard labels, not one-hot rows"
        )
    if labels.dtype == torch.bool:
        raise ConfigError("labels must be integer class indices, got a bool tensor")
    if n and checking_values() and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ConfigError(
            f"labels must lie in [0, {c}) for {c} classes, got values from "
            f"{int(labels.min())} to {int(labels.max())}"
        )
    return labels.long()


def _dkd_log_probs(z: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Binary log-probabilities ``(log b_target, log b_rest)`` and non-target log-softmax."""
    n, c = z.shape
    z_target = z.gather(1, target[:, None])  # N x 1
    # Row i's C - 1 non-target logits in column order: column j of ``others`` reads column
    # j (before the target) or j + 1 (from it on); a gather keeps every shape static.
    columns = torch.arange(c - 1, device=z.device)[None, :].expand(n, c - 1)
    others = z.gather(1, columns + (columns >= target[:, None]).long())
    lse_all = torch.logsumexp(z, dim=1, keepdim=True)
    binary = torch.cat([z_target - lse_all, torch.logsumexp(others, 1, keepdim=True) - lse_all], 1)
    return binary, torch.log_softmax(others, dim=1)


def dkd_parts(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float = 4.0,
    *,
    standardize: bool = False,
    eps: float = 1e-7,
) -> tuple[Tensor, Tensor]:
    """``(TCKD, NCKD)`` of decoupled KD (Zhao et al., CVPR 2022), each ``T^2 * batch-mean KL``.

    With ``p = softmax(z / T)`` and the label ``y``: TCKD is ``KL(b^t || b^s)`` between the
    binary distributions ``b = (p_y, 1 - p_y)``; NCKD is ``KL(p~^t || p~^s)`` between the
    softmaxes over the ``C - 1`` non-target classes only. The reference code masks the target
    by subtracting 1000 from ``z_y / T`` before the softmax; here the target column is removed,
    which is the exact limit (identical unless logits / T differ by ~1000), and ``1 - p_y`` is
    computed as a log-sum-exp, so no ``log(0)`` appears when ``p_y`` rounds to 1.
    ``standardize=True`` applies :func:`standardize_logits` (``eps``) to both first (Sun et al.
    2024).
    """
    _check_logits(student_logits, teacher_logits, "DKD")
    n, c = student_logits.shape
    target = _check_labels(labels, n, c).to(student_logits.device)
    temp = check_number("temperature", temperature, positive=True)
    if standardize:
        student_logits = standardize_logits(student_logits, eps)
        teacher_logits = standardize_logits(teacher_logits, eps)
    bin_s, rest_s = _dkd_log_probs(student_logits / temp, target)
    bin_t, rest_t = _dkd_log_probs(teacher_logits / temp, target)
    tckd = temp**2 * _kl_rows(bin_t, bin_s).mean()
    nckd = temp**2 * _kl_rows(rest_t, rest_s).mean()
    return tckd, nckd


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    *,
    standardize: bool = False,
    eps: float = 1e-7,
) -> Tensor:
    """Decoupled KD: ``alpha * TCKD + beta * NCKD`` (see :func:`dkd_parts`).

    Per sample, classic KD is ``TCKD + (1 - p^t_y) * NCKD`` (the paper's decomposition), which
    ties NCKD's weight to the teacher's confidence; DKD gives the two fixed weights. The
    defaults are the paper's CIFAR-100 setting. The reference's linear warm-up of the DKD
    weight belongs to the method, not to this loss.
    """
    a = check_number("alpha", alpha, positive=False)
    b = check_number("beta", beta, positive=False)
    tckd, nckd = dkd_parts(
        student_logits, teacher_logits, labels, temperature, standardize=standardize, eps=eps
    )
    return a * tckd + b * nckd


# ---------------------------------------------------------------- DIST


def _pearson_rows(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_parts(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    *,
    eps: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    """``(inter, intra)`` of DIST (Huang et al., NeurIPS 2022), each times ``T^2``.

    With ``P = softmax(Z / T)`` (N x C): ``inter = 1 - mean_i rho(P^s[i, :], P^t[i, :])`` (each
    sample's class distribution) and ``intra = 1 - mean_c rho(P^s[:, c], P^t[:, c])`` (each
    class's scores across the batch), ``rho`` the Pearson correlation. As in the reference
    code, ``eps`` is added to the product of the two centred norms, so a constant row or column
    gives correlation 0 instead of NaN. Needs N >= 2 (intra) and C >= 2 (inter).
    """
    _check_logits(student_logits, teacher_logits, "DIST", min_batch=2)
    temp = check_number("temperature", temperature, positive=True)
    eps = check_number("eps", eps, positive=False)
    p_s = torch.softmax(student_logits / temp, dim=1)
    p_t = torch.softmax(teacher_logits / temp, dim=1)
    inter = 1 - _pearson_rows(p_s, p_t, eps).mean()
    intra = 1 - _pearson_rows(p_s.t(), p_t.t(), eps).mean()
    return temp**2 * inter, temp**2 * intra


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    *,
    eps: float = 1e-8,
) -> Tensor:
    """DIST: ``beta * inter + gamma * intra`` (see :func:`dist_parts`).

    The defaults are the paper's ImageNet setting; its CIFAR-100 setting is
    ``beta = gamma = 2, T = 4``.
    """
    b = check_number("beta", beta, positive=False)
    g = check_number("gamma", gamma, positive=False)
    inter, intra = dist_parts(student_logits, teacher_logits, temperature, eps=eps)
    return b * inter + g * intra
