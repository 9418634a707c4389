"""Ahn et al., CVPR 2019, "Variational Information Distillation for Knowledge Transfer" (VID).

VID maximises a variational lower bound on the mutual information between a teacher feature
map ``t`` and a student feature map ``s`` by fitting a Gaussian ``q(t | s)`` whose mean is a
small regressor ``mu(s)`` and whose variance is one learned number per teacher channel:

    -log q(t | s) = sum_{c,h,w} [ 0.5 * log sigma_c^2 + (t_chw - mu_chw(s))^2 / (2 sigma_c^2) ]
                    + const,      sigma_c^2 = softplus(alpha_c) + eps.

The loss here is the mean (not the sum) over N, C, H and W of the bracket, and the constant
``0.5 * log(2 pi)`` is dropped, as in the authors' reference: the gradients are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses.features import match_spatial


def _as_map(x: Tensor, role: str) -> Tensor:
    """``N x D`` features become ``N x D x 1 x 1``; ``N x C x H x W`` pass through."""
    if x.dim() == 2:
        return x[:, :, None, None]
    if x.dim() != 4:
        raise ConfigError(
            f"VID {role} features must be N x C x H x W or N x D, got {tuple(x.shape)}; "
            "flatten or reshape them to one of these"
        )
    return x


def vid_loss(mean: Tensor, target: Tensor, variance: Tensor) -> Tensor:
    """``mean_{n,c,h,w} 0.5 * (log var_c + (t - mu)^2 / var_c)``: Gaussian NLL without its constant.

    ``mean`` and ``target`` are ``N x C x H x W`` (or ``N x C``); ``variance`` has ``C`` entries,
    all > 0, one per channel (Ahn et al. 2019, with a per-channel variance).
    """
    if mean.shape != target.shape:
        raise ConfigError(
            f"VID mean {tuple(mean.shape)} and teacher features {tuple(target.shape)} differ; "
            "the regressor must output the teacher's shape"
        )
    if mean.dim() < 2 or variance.dim() != 1 or variance.shape[0] != mean.shape[1]:
        raise ConfigError(
            f"VID variance {tuple(variance.shape)} must have one entry per channel of the mean "
            f"{tuple(mean.shape)}; pass a vector of length C"
        )
    var = variance.view(1, -1, *([1] * (mean.dim() - 2)))
    return (0.5 * (torch.log(var) + (target - mean) ** 2 / var)).mean()


def _inverse_softplus(y: float) -> float:
    """``alpha`` with ``log(1 + exp(alpha)) = y`` for ``y > 0``, stable for large and small y."""
    return y + math.log(-math.expm1(-y))


class VIDRegressor(nn.Module):
    """VID's Gaussian ``q(t | s)``: ``mu = conv1x1 -> ReLU -> conv1x1 -> ReLU -> conv1x1`` of the
    student map, ``sigma_c^2 = softplus(alpha_c) + eps`` per teacher channel (Ahn et al. 2019).

    ``hidden_channels`` is the width of the two inner convolutions; ``None`` uses the teacher's
    channel count, as the reference does. The convolutions have no bias, as in the reference.
    ``alpha`` starts at ``softplus^-1(init_var - eps)`` so the initial variance is ``init_var``
    (reference: 5.0, eps 1e-5). ``forward(fs, ft)`` returns :func:`vid_loss`; maps whose spatial
    sizes differ are pooled by :func:`match_spatial`, and flat ``N x D`` features are treated as
    ``N x D x 1 x 1``. Detaching ``ft`` is the caller's choice.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        hidden_channels: int | None = None,
        init_var: float = 5.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        hidden = teacher_channels if hidden_channels is None else hidden_channels
        if min(student_channels, teacher_channels, hidden) < 1:
            raise ConfigError(
                f"VID channel counts must be >= 1, got student={student_channels}, "
                f"teacher={teacher_channels}, hidden={hidden}"
            )
        if not (math.isfinite(eps) and eps > 0 and math.isfinite(init_var) and init_var > eps):
            raise ConfigError(
                f"VID needs eps > 0 and a finite init_var > eps, got init_var={init_var}, "
                f"eps={eps}; the reference uses init_var=5.0, eps=1e-5"
            )
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.eps = eps
        self.regressor = nn.Sequential(
            nn.Conv2d(student_channels, hidden, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, teacher_channels, kernel_size=1, bias=False),
        )
        alpha0 = _inverse_softplus(init_var - eps)
        self.alpha = nn.Parameter(torch.full((teacher_channels,), alpha0))

    @property
    def variance(self) -> Tensor:
        """``softplus(alpha) + eps``, one entry per teacher channel."""
        return F.softplus(self.alpha) + self.eps

    def predict_mean(self, fs: Tensor) -> Tensor:
        """``mu(s)``: ``N x Ct x H x W`` for an ``N x Cs x H x W`` (or ``N x Cs``) student input."""
        fs = _as_map(fs, "student")
        if fs.shape[1] != self.student_channels:
            raise ConfigError(
                f"VID student features {tuple(fs.shape)} have {fs.shape[1]} channels, the "
                f"regressor was built for {self.student_channels}; rebuild it with the right count"
            )
        return self.regressor(fs)

    def forward(self, fs: Tensor, ft: Tensor) -> Tensor:
        fs, ft = _as_map(fs, "student"), _as_map(ft, "teacher")
        if fs.shape[0] != ft.shape[0]:
            raise ConfigError(
                f"VID student {tuple(fs.shape)} and teacher {tuple(ft.shape)} features have "
                "different batch sizes; feed both models the same batch"
            )
        if ft.shape[1] != self.teacher_channels:
            raise ConfigError(
                f"VID teacher features {tuple(ft.shape)} have {ft.shape[1]} channels, the "
                f"regressor was built for {self.teacher_channels}; rebuild it with the right count"
            )
        fs, ft = match_spatial(fs, ft)
        return vid_loss(self.predict_mean(fs), ft, self.variance)
