"""Chen, Liu, Zhao & Jia, CVPR 2021, "Distilling Knowledge via Knowledge Review" (ReviewKD).

A student level is taught by the teacher's level of the same depth *and* by what the deeper
student levels know: the attention-based fusion (:class:`ABF`) mixes each student feature with
the fused result of the level below it, deepest first (:class:`ReviewFusion`), and each
output is compared with the teacher's feature by the hierarchical context loss
(:func:`hcl_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses.features import match_spatial

Size = int | tuple[int, int]


def _pair(size: Size | None) -> tuple[int, int] | None:
    if size is None:
        return None
    out = (size, size) if isinstance(size, int) else tuple(size)
    if len(out) != 2 or min(out) < 1:
        raise ConfigError(f"ReviewKD sizes must be an int or (H, W) with both >= 1, got {size!r}")
    return (int(out[0]), int(out[1]))


class ABF(nn.Module):
    """Attention-based fusion of one student level (Chen et al. 2021).

    ``x = BN(conv1x1(student))`` with ``mid_channels``; with a ``residual`` (the fused map of the
    next deeper level, ``mid_channels`` wide) it is upsampled (nearest) to ``x``'s size and
    ``a = sigmoid(conv1x1([x, residual]))`` (2 channels) gives ``x = x * a_0 + residual * a_1``.
    If ``out_size`` is set and differs, ``x`` is resized there (nearest) and then
    ``out = BN(conv3x3(x))`` with ``out_channels`` (the teacher's). Returns ``(out, x)``; ``x``
    is the residual for the next shallower level. ``fuse=False`` (the deepest level) has no
    attention and takes no residual. The 1x1 and 3x3 convolutions have no bias and start from
    ``kaiming_uniform_(a=1)``, as in the reference.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        fuse: bool,
        out_size: Size | None = None,
    ) -> None:
        super().__init__()
        if min(in_channels, mid_channels, out_channels) < 1:
            raise ConfigError(
                f"ABF channel counts must be >= 1, got in={in_channels}, mid={mid_channels}, "
                f"out={out_channels}"
            )
        self.in_channels, self.mid_channels = in_channels, mid_channels
        self.out_size = _pair(out_size)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channels),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.att_conv = (
            nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid())
            if fuse
            else None
        )
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"ABF input {tuple(x.shape)} must be N x {self.in_channels} x H x W; build the "
                "fusion with the student's channel count for this level"
            )
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None or residual.dim() != 4 or residual.shape[:2] != x.shape[:2]:
                got = None if residual is None else tuple(residual.shape)
                raise ConfigError(
                    f"ABF with fusion needs a residual N x {self.mid_channels} x h x w from the "
                    f"deeper level for input {tuple(x.shape)}, got {got}"
                )
            residual = F.interpolate(residual, size=tuple(x.shape[-2:]), mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        elif residual is not None:
            raise ConfigError("ABF built with fuse=False (the deepest level) takes no residual")
        if self.out_size is not None and tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="nearest")
        return self.conv2(x), x


class ReviewFusion(nn.Module):
    """The review path of ReviewKD: one :class:`ABF` per level, run from the deepest level to
    the shallowest, each fusing its student feature with the deeper level's fused map.

    ``student_channels``/``teacher_channels`` list the levels shallow to deep; ``forward``
    takes the student features in that order and returns the outputs in that order, level
    ``i`` shaped like the teacher's ``N x teacher_channels[i] x H x W``. ``teacher_sizes``
    (ints or ``(H, W)``) resizes a level's output to the teacher's size (the reference's
    ``out_shapes``); ``None`` keeps the student's size. ``mid_channels`` defaults to
    ``min(512, student_channels[-1])``, the reference's choice.
    """

    def __init__(
        self,
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        mid_channels: int | None = None,
        teacher_sizes: Sequence[Size | None] | None = None,
    ) -> None:
        super().__init__()
        levels = len(student_channels)
        if levels < 1 or len(teacher_channels) != levels or (
            teacher_sizes is not None and len(teacher_sizes) != levels
        ):
            raise ConfigError(
                f"ReviewKD needs one teacher channel count (and size) per student level, got "
                f"{len(student_channels)} student, {len(teacher_channels)} teacher levels"
                + ("" if teacher_sizes is None else f", {len(teacher_sizes)} sizes")
            )
        mid = min(512, student_channels[-1]) if mid_channels is None else mid_channels
        sizes = [None] * levels if teacher_sizes is None else list(teacher_sizes)
        self.abfs = nn.ModuleList(
            ABF(c_s, mid, c_t, fuse=i < levels - 1, out_size=size)
            for i, (c_s, c_t, size) in enumerate(
                zip(student_channels, teacher_channels, sizes, strict=True)
            )
        )

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self.abfs):
            raise ConfigError(
                f"ReviewKD got {len(features)} student features, built for {len(self.abfs)} "
                "levels; pass one feature per level, shallow to deep"
            )
        outputs: list[Tensor] = [features[0]] * len(features)
        residual: Tensor | None = None
        for i in reversed(range(len(features))):
            outputs[i], residual = self.abfs[i](features[i], residual)
        return outputs


def hcl_loss(fs_list: Sequence[Tensor], ft_list: Sequence[Tensor]) -> Tensor:
    """Hierarchical context loss, summed over levels (Chen et al. 2021).

    Per level, with ``h = min(H, W)``::

        (MSE(fs, ft) + sum_j w_j MSE(pool_l(fs), pool_l(ft))) / (1 + sum_j w_j)

    over the pooled sizes ``l`` in (4, 2, 1) with ``l < h`` (larger sizes are skipped, as
    in the reference, which compares with ``H``); ``pool_l`` is adaptive average pooling to
    ``l x l``, and the weights halve from the full-size term's 1 for each size kept:
    ``w = 0.5, 0.25, 0.125`` for an 8x8 map, ``0.5, 0.25`` (sizes 2, 1) for 4x4. MSE is the
    mean over all elements. A student and teacher level whose spatial sizes differ are first
    adaptive-average-pooled to the smaller (per dimension).
    """
    if len(fs_list) != len(ft_list) or not fs_list:
        raise ConfigError(
            f"hcl_loss needs the same number (>= 1) of student and teacher levels, got "
            f"{len(fs_list)} and {len(ft_list)}"
        )
    per_level: list[Tensor] = []
    for level, (fs, ft) in enumerate(zip(fs_list, ft_list, strict=True)):
        if fs.dim() != 4 or ft.dim() != 4 or fs.shape[:2] != ft.shape[:2]:
            raise ConfigError(
                f"hcl_loss level {level}: student {tuple(fs.shape)} and teacher "
                f"{tuple(ft.shape)} must both be N x C x H x W with the same N and C; map the "
                "student to the teacher's channels first (e.g. ReviewFusion)"
            )
        fs, ft = match_spatial(fs, ft)
        loss = F.mse_loss(fs, ft)
        weight, weights = 1.0, 1.0
        for size in (4, 2, 1):
            if size >= min(fs.shape[-2:]):
                continue
            weight /= 2.0
            pooled = F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size))
            loss = loss + weight * pooled
            weights += weight
        per_level.append(loss / weights)
    return torch.stack(per_level).sum()
