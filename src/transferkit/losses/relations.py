"""Relational distillation losses: RKD, similarity preserving (SP), CC and PKT.

They compare how the samples of a batch relate to each other in the student's and in the
teacher's embedding, so (except CC, see :func:`cc_loss`) the two widths may differ: only the
batch size N must match. Inputs are ``N x D`` or ``N x ...`` (flattened to ``N x D``). All are
pure and differentiable; pass the teacher's features detached.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from transferkit.errors import ConfigError
from transferkit.losses._checks import check_number


def _flat_pair(
    student: Tensor,
    teacher: Tensor,
    what: str,
    *,
    min_batch: int = 1,
    same_width: bool = False,
) -> tuple[Tensor, Tensor]:
    """Check the batch sizes (and widths) and flatten both to ``N x D``."""
    shapes = f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)}"
    if student.dim() < 2 or teacher.dim() < 2:
        raise ConfigError(f"{what} needs N x D (or N x ...) features, got {shapes}")
    if student.shape[0] != teacher.shape[0]:
        raise ConfigError(
            f"{what}: {shapes} have different batch sizes; pass features of the same N samples"
        )
    s, t = student.flatten(1), teacher.flatten(1)
    if same_width and s.shape[1] != t.shape[1]:
        raise ConfigError(
            f"{what} needs the same embedding width, got {shapes} ({s.shape[1]} vs "
            f"{t.shape[1]} flattened); project both to a common width first"
        )
    if s.shape[0] < min_batch:
        raise ConfigError(
            f"{what} relates samples to each other and needs a batch of at least {min_batch}, "
            f"got {shapes}"
        )
    return s, t


def _tiny(x: Tensor) -> float:
    """A positive floor that does not round to 0 in ``x``'s dtype (1e-12 or fp16's ``tiny``)."""
    return max(1e-12, torch.finfo(x.dtype).tiny) if x.is_floating_point() else 1e-12


def _l2_normalize(x: Tensor, dim: int) -> Tensor:
    """``x / max(||x||_2, eps)`` along ``dim`` (zero vectors stay 0), fp16-safe ``eps``."""
    return x / x.norm(p=2, dim=dim, keepdim=True).clamp(min=_tiny(x))


# ---------------------------------------------------------------- RKD


def _normalized_distances(e: Tensor) -> Tensor:
    """``||e_i - e_j|| / mu`` (N x N), ``mu`` the mean over the pairs ``i != j``; diagonal 0.

    Squared distances come from the Gram matrix (``O(N^2)`` memory) and are clamped at a tiny
    ``eps`` before the square root, so coinciding samples get a zero, not a NaN, gradient.
    """
    sq = e.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2 * (e @ e.t())
    eps = _tiny(d2)
    off = ~torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    # the diagonal never goes through sqrt: no 0 * inf in the backward pass
    d = torch.where(off, torch.where(off, d2, 1.0).clamp(min=eps).sqrt(), 0.0)
    n = e.shape[0]
    # the diagonal is 0, so the sum over all entries is the sum over the pairs i != j
    return d / (d.sum() / (n * (n - 1))).clamp(min=eps)


def _angle_cosines(e: Tensor) -> Tensor:
    """``cos[j, i, k]``: cosine of the angle at ``e_j`` between ``e_i - e_j`` and ``e_k - e_j``.

    N x N x N; 0 where ``i == j`` or ``k == j`` (a zero vector normalises to 0). Uses
    ``O(N^2 D)`` memory.
    """
    unit = _l2_normalize(e[None, :, :] - e[:, None, :], dim=2)  # [j, i] = e_i - e_j
    return unit @ unit.transpose(1, 2)


def rkd_distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD-D (Park et al., CVPR 2019): Huber loss between mean-normalised pairwise distances.

    ``psi(i, j) = ||e_i - e_j|| / mu`` with ``mu`` the mean distance over the pairs ``i != j``;
    the loss is ``smooth_l1`` (Huber, delta = 1) between the student's and teacher's ``psi``.
    The paper sums over pairs; like the reference code this *averages* over all ``N^2``
    entries, the zero diagonal included (the RKD weights 25/50 are tuned for that).
    """
    s, t = _flat_pair(student, teacher, "RKD distance loss", min_batch=2)
    return F.smooth_l1_loss(_normalized_distances(s), _normalized_distances(t), beta=1.0)


def rkd_angle_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD-A (Park et al., CVPR 2019): Huber loss between triplet angle cosines.

    ``psi(i, j, k) = cos angle(e_i - e_j, e_k - e_j)`` for every triplet, ``smooth_l1``
    (delta = 1) between student and teacher. As in the reference code the mean runs over all
    ``N^3`` ordered triplets, including degenerate ones (``i == j`` or ``k == j``), whose cosine
    is taken as 0 in both models, so they add 0 to the sum but count in the mean.
    """
    s, t = _flat_pair(student, teacher, "RKD angle loss", min_batch=2)
    return F.smooth_l1_loss(_angle_cosines(s), _angle_cosines(t), beta=1.0)


def rkd_loss(
    student: Tensor,
    teacher: Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> Tensor:
    """RKD: ``distance_weight * RKD-D + angle_weight * RKD-A`` (paper's weights 25 and 50)."""
    wd = check_number("distance_weight", distance_weight, positive=False)
    wa = check_number("angle_weight", angle_weight, positive=False)
    return wd * rkd_distance_loss(student, teacher) + wa * rkd_angle_loss(student, teacher)


# ---------------------------------------------------------------- SP


def sp_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Similarity preserving KD (Tung & Mori, ICCV 2019): ``||G~_s - G~_t||_F^2 / N^2``.

    ``G = F F^T`` (N x N) on the flattened features, each row L2-normalised (``G~``). Only N
    must match; the widths may differ. Returns a scalar (the reference returns shape ``(1,)``).
    """
    s, t = _flat_pair(student, teacher, "SP loss")
    g_s = _l2_normalize(s @ s.t(), dim=1)
    g_t = _l2_normalize(t @ t.t(), dim=1)
    return (g_s - g_t).pow(2).sum() / s.shape[0] ** 2


# ---------------------------------------------------------------- CC


def cc_matrix(
    embeddings: Tensor, gamma: float = 0.4, p_order: int = 2, *, normalize: bool = True
) -> Tensor:
    """CC's correlation matrix: Taylor series of the Gaussian RBF kernel up to order ``P``.

    ``k(x, y) = exp(-gamma ||x - y||^2) = exp(-2 gamma) exp(2 gamma x.y)`` for unit vectors,
    so ``C_ij ~ exp(-2 gamma) * sum_{p=0..P} (2 gamma)^p / p! * (x_i . x_j)^p`` (Peng et al.,
    ICCV 2019, Eq. 9). The rows are L2-normalised first (``normalize=True``, as the
    expansion assumes and the authors' code does).
    """
    g = check_number("gamma", gamma, positive=True)
    if isinstance(p_order, bool) or not isinstance(p_order, int) or p_order < 1:
        raise ConfigError(f"p_order must be an integer >= 1, got {p_order!r}")
    e = embeddings.flatten(1)
    if normalize:
        e = _l2_normalize(e, dim=1)
    sim = e @ e.t()
    total = torch.ones_like(sim)
    power = torch.ones_like(sim)
    for p in range(1, p_order + 1):
        power = power * sim
        total = total + (2 * g) ** p / math.factorial(p) * power
    return math.exp(-2 * g) * total


def cc_loss(
    student: Tensor,
    teacher: Tensor,
    gamma: float = 0.4,
    p_order: int = 2,
    *,
    normalize: bool = True,
) -> Tensor:
    """Correlation congruence (Peng et al., ICCV 2019): ``||C_s - C_t||_F^2 / N^2``.

    ``C`` is :func:`cc_matrix` (``gamma``, ``p_order``; defaults 0.4 and 2 as in the paper).
    The squared Frobenius norm over ``N^2`` follows the paper's Eq. 6 and the authors' code
    (an MSE); torchdistill divides the *unsquared* norm by ``N^2`` instead. Both embeddings
    must have the same width: the method projects them first.
    """
    s, t = _flat_pair(student, teacher, "CC loss", same_width=True)
    c_s = cc_matrix(s, gamma, p_order, normalize=normalize)
    c_t = cc_matrix(t, gamma, p_order, normalize=normalize)
    return (c_s - c_t).pow(2).sum() / s.shape[0] ** 2


# ---------------------------------------------------------------- PKT


def _pkt_probabilities(e: Tensor, eps: float) -> Tensor:
    """Row-normalised ``(cos + 1) / 2`` similarities (N x N), self-similarity included."""
    unit = e / (e.norm(dim=1, keepdim=True) + eps)
    sim = (unit @ unit.t() + 1) / 2
    return sim / sim.sum(dim=1, keepdim=True)


def pkt_loss(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018).

    ``c_ij = (cos(f_i, f_j) + 1) / 2``, rows normalised to conditional probabilities
    ``p_{j|i} = c_ij / sum_k c_ik`` (the diagonal ``j = i`` kept, as in the reference code),
    then ``mean_{i,j} p^t_{j|i} log((p^t_{j|i} + eps) / (p^s_{j|i} + eps))``. As in the
    reference the mean is over all ``N^2`` entries, i.e. ``KL(P^t || P^s)`` averaged over rows
    and divided once more by N; ``eps`` also guards the feature norms. Widths may differ.
    """
    s, t = _flat_pair(student, teacher, "PKT loss")
    eps = check_number("eps", eps, positive=False)
    p_s, p_t = _pkt_probabilities(s, eps), _pkt_probabilities(t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()
