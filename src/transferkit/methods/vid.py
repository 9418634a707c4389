"""VID (Ahn et al., CVPR 2019): variational information distillation.

For every compared (student layer, teacher layer) pair a :class:`~transferkit.losses.vid.
VIDRegressor` fits a Gaussian ``q(t | s)`` (a 1x1-convolution mean, a per-channel variance)
and the loss is its negative log-likelihood of the teacher's features. Defaults follow
RepDistiller (``feat[1:-1]``: every stage of both networks, weight 1.0, hidden width = the
teacher's channels, initial variance 5.0). The loss is ``weight * sum over pairs``,
as RepDistiller's ``-b 1``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses.vid import VIDRegressor
from transferkit.methods.base import TrainInfo, check_count_at_most, check_scale
from transferkit.methods.layered import LayerMethod
from transferkit.methods.registry import METHODS

# hidden_channels is the width of the regressor's two inner convolutions (a hidden x hidden
# 1x1 convolution per stage pair). RepDistiller uses the teacher's channels (None here): at
# most 2048, ResNet-50's last stage; 16384 is 8x that, and 10**9 would try to allocate
# exabytes of weights.
MAX_HIDDEN = 16384
HIDDEN_WHY = "8x the widest teacher stage (2048); wider only allocates absurd memory"


def _channels(shape: tuple[int, ...], who: str, layer: str) -> int:
    """The channel count of a per-sample ``C x H x W`` or ``D`` shape."""
    if len(shape) not in (1, 3):
        raise ConfigError(
            f"vid reads C x H x W maps or D vectors, but {who} layer {layer!r} gives {shape}; "
            "name other layers with student_layers / teacher_layers"
        )
    return shape[0]


@METHODS.register("vid", "variational information distillation: Gaussian q(teacher | student) "
                  "per stage pair (Ahn et al., CVPR 2019)")
class VIDDistillation(LayerMethod):
    name = "vid"
    default = "stages"

    def __init__(
        self,
        teacher: nn.Module,
        weight: float = 1.0,
        student_layers: Any = None,
        teacher_layers: Any = None,
        hidden_channels: int | None = None,
        init_var: float = 5.0,
        inputs: str = "source",
    ) -> None:
        super().__init__(teacher, weight, student_layers, teacher_layers, inputs)
        self.hidden_channels = None if hidden_channels is None else check_count_at_most(
            self.name, "hidden_channels", hidden_channels, MAX_HIDDEN, HIDDEN_WHY)
        self.init_var = check_scale("init_var", init_var)
        self.regressors = nn.ModuleList()

    def setup_connectors(
        self, shapes: list[tuple[tuple[int, ...], tuple[int, ...]]], info: TrainInfo
    ) -> None:
        self.regressors = nn.ModuleList(
            VIDRegressor(
                _channels(s, "student", s_tap.layer),
                _channels(t, "teacher", t_tap.layer),
                self.hidden_channels,
                self.init_var,
            )
            for (s, t), (s_tap, t_tap) in zip(shapes, self.pairs, strict=True)
        )

    def pair_loss(self, index: int, student: Tensor, teacher: Tensor) -> Tensor:
        return self.regressors[index](student, teacher)
