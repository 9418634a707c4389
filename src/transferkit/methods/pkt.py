"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018, "Learning Deep
Representations with Probabilistic Knowledge Transfer").

``L = weight * mean_{i,j} p^t_{j|i} log(p^t_{j|i} / p^s_{j|i})`` with ``p_{j|i}`` the
row-normalised cosine similarities ``(cos(f_i, f_j) + 1) / 2`` of the batch
(:func:`~transferkit.losses.pkt_loss`); the widths may differ. Defaults as RepDistiller: the
feature vector the head reads (``feat[-1]``, the ``features`` module), weight 30000.
"""

from __future__ import annotations

from torch import Tensor

from transferkit.losses import pkt_loss
from transferkit.methods.layered import LayerMethod
from transferkit.methods.registry import METHODS


@METHODS.register("pkt", "probabilistic knowledge transfer: match the batch's cosine-similarity "
                  "distributions of the embeddings (Passalis & Tefas, ECCV 2018)")
class PKT(LayerMethod):
    name = "pkt"
    default = "embedding"
    flatten = True
    default_weight = 30000.0

    def pair_loss(self, index: int, student: Tensor, teacher: Tensor) -> Tensor:
        return pkt_loss(student, teacher)
