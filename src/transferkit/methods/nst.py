"""Neural selective transfer (Huang & Wang 2017, "Like What You Like: Knowledge Distill via
Neuron Selectivity Transfer").

``L = weight * sum over pairs of MMD^2`` between the student's and the teacher's channels,
each channel's flattened, L2-normalised map one sample, with the polynomial kernel
``k(x, y) = (x^T y)^2`` (:func:`~transferkit.losses.nst_loss`); channel counts may differ and a
larger map is pooled to the smaller one's size. Defaults as RepDistiller: every stage
(``feat[1:-1]``), weight 50 (summed over the stages, as RepDistiller does).
Needs ``C x H x W`` feature maps.
"""

from __future__ import annotations

from torch import Tensor

from transferkit.losses import nst_loss
from transferkit.methods.layered import LayerMethod
from transferkit.methods.registry import METHODS


@METHODS.register("nst", "neuron selectivity transfer: polynomial-kernel MMD between channel "
                  "maps of every stage (Huang & Wang, 2017)")
class NeuronSelectivityTransfer(LayerMethod):
    name = "nst"
    default = "stages"
    needs_maps = True
    default_weight = 50.0

    def pair_loss(self, index: int, student: Tensor, teacher: Tensor) -> Tensor:
        return nst_loss(student, teacher)
