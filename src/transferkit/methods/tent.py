"""Tent (Wang et al., ICLR 2021): test-time entropy minimisation of normalisation layers.

Only the affine parameters (scale and shift) of the model's normalisation layers are
trained, on unlabelled target rows, to minimise the mean prediction entropy
``mean_i H(softmax(z_i))``; every other parameter stays as the source model left it. The
BatchNorm statistics follow the target batches during adaptation (running averages, saved
with the model), so the adapted model is an ordinary model at test time.
"""

from __future__ import annotations

from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.losses import mean_entropy
from transferkit.methods.base import Batch, Method, Outputs, TrainInfo, check_positive
from transferkit.methods.registry import METHODS

NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
         nn.modules.instancenorm._InstanceNorm)


def norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The affine parameters of every normalisation layer of ``model``."""
    return [p for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(False)]


@METHODS.register("tent", "source-free: entropy minimisation of the normalisation layers' "
                  "affine parameters (Wang et al., ICLR 2021)")
class Tent(Method):
    name = "tent"
    source_free = True

    def __init__(self, trade_off: float = 1.0) -> None:
        super().__init__()
        self.trade_off = check_positive("trade_off", trade_off)  # finite, > 0
        self._frozen: list[nn.Parameter] = []

    def setup(self, info: TrainInfo) -> None:
        if info.student is None:
            raise ConfigError("tent needs the student network")
        trained = {id(p) for p in norm_parameters(info.student)}
        if not trained:
            raise ConfigError(
                f"tent trains normalisation layers, and {type(info.student).__name__} has "
                "none with affine parameters (BatchNorm, LayerNorm, GroupNorm or InstanceNorm "
                "with affine=True); use shot, or a model with such a layer"
            )
        if not self._frozen:
            self._frozen = [p for p in info.student.parameters()
                            if p.requires_grad and id(p) not in trained]
            for param in self._frozen:
                param.requires_grad_(False)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        return {"entropy": self.trade_off * mean_entropy(out.logits)}

    def close(self) -> None:
        for param in self._frozen:
            param.requires_grad_(True)
        self._frozen = []
