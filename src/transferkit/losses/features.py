"""Feature-map distillation losses: attention transfer (AT), NST and the FitNet hint.

Feature maps are ``N x C x H x W``. AT and NST compare maps whose channel counts may differ;
where the spatial sizes differ, the larger map is adaptive-average-pooled to the smaller
one's size (height and width separately) before anything else, as the reference code does for
square maps. All are pure and differentiable; pass the teacher's features detached.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from transferkit.errors import ConfigError
from transferkit.losses._checks import check_number
from transferkit.losses.relations import _l2_normalize


def _check_maps(student: Tensor, teacher: Tensor, what: str) -> None:
    """Both ``N x C x H x W`` with the same N."""
    shapes = f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)}"
    if student.dim() != 4 or teacher.dim() != 4:
        raise ConfigError(f"{what} needs N x C x H x W feature maps, got {shapes}")
    if student.shape[0] != teacher.shape[0]:
        raise ConfigError(
            f"{what}: {shapes} have different batch sizes; pass features of the same N samples"
        )


def match_spatial(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool whichever map is larger to ``(min H, min W)``; others unchanged."""
    size = (min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3]))
    if tuple(student.shape[2:]) != size:
        student = F.adaptive_avg_pool2d(student, size)
    if tuple(teacher.shape[2:]) != size:
        teacher = F.adaptive_avg_pool2d(teacher, size)
    return student, teacher


def attention_map(features: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention ``Q = vec(mean_c |A_c|^p)`` L2-normalised per sample (N x HW).

    Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention". The paper uses
    ``|A|^p``; the reference code's ``A.pow(p)`` is the same for the usual even ``p``.
    """
    if features.dim() != 4:
        raise ConfigError(
            f"attention_map needs an N x C x H x W feature map, got {tuple(features.shape)}"
        )
    p = check_number("p", p, positive=True)
    q = features.abs().pow(p).mean(dim=1).flatten(1)
    return _l2_normalize(q, dim=1)


def at_loss(student: Tensor, teacher: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer: ``mean_{i,k} (Q^s_ik - Q^t_ik)^2`` over samples and positions.

    ``Q`` is :func:`attention_map`. The paper writes ``beta/2 * ||Q^s - Q^t||_2`` (a norm);
    this follows the reference code's arithmetic, the mean of the squared differences (the
    method's weight, 1000 in the reference, is applied outside). Channels may differ; a larger
    spatial map is pooled to the smaller size first (:func:`match_spatial`).
    """
    _check_maps(student, teacher, "AT loss")
    student, teacher = match_spatial(student, teacher)
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()


def nst_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Neural selective transfer (Huang & Wang 2017, "Like What You Like"): squared MMD.

    Each channel's map, flattened over the positions and L2-normalised, is one sample of a
    distribution; with the polynomial kernel ``k(x, y) = (x^T y)^2`` (``d = 2, c = 0``) the
    loss per image is ``mean k(s, s') + mean k(t, t') - 2 mean k(s, t)`` over all channel
    pairs, then averaged over the batch (the reference's full loss). Channels may differ; a
    larger spatial map is pooled to the smaller size first (:func:`match_spatial`).
    """
    _check_maps(student, teacher, "NST loss")
    student, teacher = match_spatial(student, teacher)
    s = _l2_normalize(student.flatten(2), dim=2)  # N x Cs x HW
    t = _l2_normalize(teacher.flatten(2), dim=2)  # N x Ct x HW

    def kernel_mean(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.transpose(1, 2)).pow(2).mean()

    return kernel_mean(s, s) + kernel_mean(t, t) - 2 * kernel_mean(s, t)


def hint_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """FitNet hint (Romero et al., ICLR 2015): mean squared error over all entries.

    The regressor mapping the student's guided layer to the teacher's hint shape lives in the
    method; here the two tensors must have the same shape.
    """
    if student.shape != teacher.shape:
        raise ConfigError(
            f"hint loss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
            "features differ; regress the student's features to the teacher's shape first"
        )
    return F.mse_loss(student, teacher)
