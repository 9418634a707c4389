"""ReviewKD (Chen, Liu, Zhao & Jia, CVPR 2021): distilling knowledge via knowledge review.

The student's levels (default: every ``stageK`` and then the feature vector the head reads,
as a ``D x 1 x 1`` map: mdistiller's ``feats[1:] + [pooled_feat]``) are fused deepest first
by :class:`~transferkit.losses.reviewkd.ReviewFusion` (attention-based fusion, mid width
``min(512, deepest student channels)``), each output resized to the teacher level's size and
channels, and compared with the teacher's same levels by :func:`~transferkit.losses.reviewkd.
hcl_loss` (summed over levels). Channel counts and sizes come from the probed tap shapes.

``loss = weight * min(epoch_progress / warmup, 1) * hcl``, where ``epoch_progress`` counts
epochs in steps (a linear ramp, like DKD's). Defaults: ``weight=1.0`` and ``warmup=0`` (no
ramp). mdistiller's CIFAR-100 recipe is ``weight=8, warmup=20`` (of 240 epochs); a ramp as
long as that would keep the term near zero in a short run, hence no ramp by default. Both
networks' levels are stage outputs after their final ReLU (mdistiller reads the teacher's
pre-activations, which hooks on stage outputs do not see).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses.reviewkd import ReviewFusion, hcl_loss
from transferkit.methods.base import (
    Batch,
    Outputs,
    Progress,
    TrainInfo,
    capped,
    check_count_at_most,
    check_nonnegative,
)
from transferkit.methods.layered import LayerMethod, default_layers
from transferkit.methods.registry import METHODS

# mid_channels is the width every level is fused at (a mid x teacher-channels 3x3 convolution
# per level): the paper's is min(512, the deepest student channels); 8192 is 16x 512, and
# mid_channels=10**9 would try to allocate terabytes of weights.
MAX_MID_CHANNELS = 8192
MID_CHANNELS_WHY = "16x the paper's 512; wider only allocates absurd memory"


def as_map(x: Tensor) -> Tensor:
    """``N x D`` vectors become ``N x D x 1 x 1`` maps; maps pass through."""
    return x[:, :, None, None] if x.dim() == 2 else x


def _map_shape(shape: tuple[int, ...], who: str, layer: str) -> tuple[int, int, int]:
    if len(shape) == 1:
        return (shape[0], 1, 1)
    if len(shape) != 3:
        raise ConfigError(
            f"reviewkd reads C x H x W maps or D vectors, but {who} layer {layer!r} gives "
            f"{shape}; name other layers with student_layers / teacher_layers"
        )
    return (shape[0], shape[1], shape[2])


def review_levels(model: nn.Module) -> list[str]:
    """Every stage of ``model``, then its feature vector (when it has both)."""
    levels = default_layers(model, "stages")
    try:
        pooled = default_layers(model, "embedding")
    except ConfigError:  # stages but no ``features`` module: the stages alone
        return levels
    return levels if levels == pooled else [*levels, *pooled]


@METHODS.register("reviewkd", "knowledge review: attention-fused student levels vs teacher "
                  "levels by hierarchical context loss (Chen et al., CVPR 2021)")
class ReviewKD(LayerMethod):
    name = "reviewkd"
    default = "stages"

    def __init__(
        self,
        teacher: nn.Module,
        weight: float = 1.0,
        warmup: float = 0.0,
        student_layers: Any = None,
        teacher_layers: Any = None,
        mid_channels: int | None = None,
        inputs: str = "source",
    ) -> None:
        super().__init__(teacher, weight, student_layers, teacher_layers, inputs)
        self.warmup = check_nonnegative("warmup", warmup)
        self.mid_channels = None if mid_channels is None else check_count_at_most(
            self.name, "mid_channels", mid_channels, MAX_MID_CHANNELS, MID_CHANNELS_WHY)
        self.epochs = 1
        self.fusion: ReviewFusion | None = None

    def bind_layers(self, student: nn.Module) -> None:
        """Default levels: every stage, then the feature vector (``features``)."""
        s_given, t_given = self.student_layers, self.teacher_layers
        try:
            if s_given is None:
                self.student_layers = tuple(review_levels(student))
            if t_given is None:
                self.teacher_layers = tuple(review_levels(self.teacher))
            super().bind_layers(student)
        finally:
            self.student_layers, self.teacher_layers = s_given, t_given

    def setup_connectors(
        self, shapes: list[tuple[tuple[int, ...], tuple[int, ...]]], info: TrainInfo
    ) -> None:
        self.epochs = info.epochs
        student, teacher = [], []
        for (s, t), (s_tap, t_tap) in zip(shapes, self.pairs, strict=True):
            student.append(_map_shape(s, "student", s_tap.layer))
            teacher.append(_map_shape(t, "teacher", t_tap.layer))
        self.fusion = ReviewFusion(
            [c for c, _, _ in student],
            [c for c, _, _ in teacher],
            self.mid_channels,
            [(h, w) for _, h, w in teacher],
        )

    def ramp(self, progress: Progress) -> Progress:
        """``min(progress * epochs / warmup, 1)``; 1 without warmup."""
        if self.warmup == 0:
            return 1.0
        return capped(progress * self.epochs / self.warmup)

    def losses(self, batch: Batch, out: Outputs, progress: Progress) -> dict[str, Tensor]:
        if self.fusion is None:
            raise ConfigError("reviewkd reads layers through the engine; train it with "
                              "Trainer / transferkit.distill")
        pairs = self.captures(out)
        fused = self.fusion([as_map(s) for s, _ in pairs])
        loss = hcl_loss(fused, [as_map(t) for _, t in pairs])
        return {self.name: self.weight * self.ramp(progress) * loss}
