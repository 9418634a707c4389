"""Correlation congruence (Peng et al., ICCV 2019, "Correlation Congruence for Knowledge
Distillation").

``L = weight * sum over pairs of ||C(e_s(s)) - C(e_t(t))||_F^2 / N^2``: both embeddings are
projected by trainable linear layers ``e_s``, ``e_t`` to a common width (``embed_dim``, 128 as
RepDistiller's ``feat_dim``), and ``C`` is the batch's correlation matrix, the order-``p_order``
Taylor expansion of a Gaussian RBF kernel (:func:`~transferkit.losses.cc_loss`). Defaults as
RepDistiller: the feature vector the head reads (``features``), weight 0.02; gamma 0.4 and
p_order 2 as in the paper.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from transferkit.losses import cc_loss
from transferkit.methods.base import TrainInfo, check_count_at_most, check_scale
from transferkit.methods.fitnet import connector_dtype
from transferkit.methods.layered import LayerMethod
from transferkit.methods.registry import METHODS

# embed_dim is the width of the two trainable projections (and of the N x embed_dim batch
# embeddings): 16384 is 128x RepDistiller's 128, the widest layer any method here takes (as
# dann's hidden); embed_dim=10**9 would try to allocate terabytes of weights.
MAX_EMBED_DIM = 16384
EMBED_DIM_WHY = "128x RepDistiller's 128; wider only allocates absurd memory"
# p_order terms of the Taylor series run every step; the paper uses 2. (2 gamma)^p / p! is
# computed in floats and p! passes the float range at p = 171, so any larger order would only
# fail at the first step, after the teacher and the data were set up.
MAX_P_ORDER = 170
P_ORDER_WHY = "Taylor terms; the paper uses 2, and p! overflows a float beyond 170"


@METHODS.register("cc", "correlation congruence: match the batch's kernel correlation matrices "
                  "of linearly embedded features (Peng et al., ICCV 2019)")
class CorrelationCongruence(LayerMethod):
    name = "cc"
    default = "embedding"
    flatten = True
    default_weight = 0.02

    def __init__(
        self,
        teacher: nn.Module,
        weight: float | None = None,
        gamma: float = 0.4,
        p_order: int = 2,
        embed_dim: int = 128,
        student_layers: Any = None,
        teacher_layers: Any = None,
        inputs: str = "source",
    ) -> None:
        super().__init__(teacher, weight, student_layers, teacher_layers, inputs)
        self.gamma = check_scale("gamma", gamma)
        self.p_order = check_count_at_most(self.name, "p_order", p_order, MAX_P_ORDER,
                                           P_ORDER_WHY)
        self.embed_dim = check_count_at_most(self.name, "embed_dim", embed_dim, MAX_EMBED_DIM,
                                             EMBED_DIM_WHY)

    def setup_connectors(self, shapes, info: TrainInfo) -> None:
        def embed(shape: tuple[int, ...]) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), self.embed_dim))

        dtype = connector_dtype(info)
        self.embed_s = nn.ModuleList(embed(s) for s, _ in shapes).to(info.device, dtype)
        self.embed_t = nn.ModuleList(embed(t) for _, t in shapes).to(info.device, dtype)

    def pair_loss(self, index: int, student: Tensor, teacher: Tensor) -> Tensor:
        s, t = self.embed_s[index](student), self.embed_t[index](teacher)
        return cc_loss(s, t, self.gamma, self.p_order)
