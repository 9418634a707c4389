"""FitNets hints (Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets").

``L = weight * sum over pairs of MSE(r(s), t)`` (:func:`~transferkit.losses.hint_loss`): a
trainable regressor ``r`` maps the student's guided layer to the shape of the teacher's hint
layer. For ``C x H x W`` maps ``r`` is a 1x1 convolution + BatchNorm from the student's to the
teacher's channels, and when the spatial sizes differ the larger map is adaptive-average-pooled
to the smaller size first; for other shapes both are flattened and ``r`` is a linear layer.
Defaults as RepDistiller: the middle stage of each network (``hint_layer=2``, ``stage2`` of a
three-stage CIFAR ResNet) and weight 100 (RepDistiller's regressor also ends in a ReLU).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from transferkit.losses import hint_loss, match_spatial
from transferkit.methods.base import TrainInfo
from transferkit.methods.layered import LayerMethod
from transferkit.methods.registry import METHODS


def connector_dtype(info: TrainInfo) -> torch.dtype | None:
    """The student's floating-point dtype, for connectors built in ``setup``."""
    student = info.student
    params = [] if student is None else [p for p in student.parameters() if p.is_floating_point()]
    return params[0].dtype if params else None


@METHODS.register("fitnet", "hints: regress the student's middle layer onto the teacher's, MSE "
                  "(Romero et al., ICLR 2015)")
class FitNet(LayerMethod):
    name = "fitnet"
    default = "middle"
    default_weight = 100.0

    def setup_connectors(self, shapes, info: TrainInfo) -> None:
        regressors: list[nn.Module] = []
        for s_shape, t_shape in shapes:
            if len(s_shape) == 3 and len(t_shape) == 3:
                regressors.append(nn.Sequential(
                    nn.Conv2d(s_shape[0], t_shape[0], 1, bias=False), nn.BatchNorm2d(t_shape[0])))
            else:
                regressors.append(nn.Sequential(
                    nn.Flatten(), nn.Linear(math.prod(s_shape), math.prod(t_shape))))
        self.regressors = nn.ModuleList(regressors).to(info.device, connector_dtype(info))

    def pair_loss(self, index: int, student: Tensor, teacher: Tensor) -> Tensor:
        if student.dim() == 4 and teacher.dim() == 4:
            student, teacher = match_spatial(student, teacher)
            return hint_loss(self.regressors[index](student), teacher)
        return hint_loss(self.regressors[index](student), teacher.flatten(1))
