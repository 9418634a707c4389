"""AdaBN (Li et al., ICLR-W 2017): re-estimate BatchNorm statistics on the target domain.

No parameter is trained: before training, every BatchNorm layer's running mean and variance
are reset and recomputed as exact averages over all target rows (one pass in train mode,
no gradient), so the source model normalises target features with target statistics. Alone
it takes no optimizer step; before another source-free method (``adabn+tent``) it gives that
method target statistics to start from.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.methods.base import Batch, Method, Outputs, TrainInfo, check_count
from transferkit.methods.registry import METHODS
from transferkit.models.base import module_modes, restore_modes

BATCH = 256


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, x: Tensor, device: torch.device,
                        batch_size: int = BATCH) -> int:
    """Reset every BatchNorm's statistics and average them over ``x``; returns the number of
    layers. ``momentum=None`` makes BatchNorm keep a cumulative (exact) average."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    saved = [(m, m.momentum) for m in norms]
    modes = module_modes(model)
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for chunk in x.split(batch_size):
            if len(chunk) > 1:  # BatchNorm needs two rows for a batch variance
                model(chunk.to(device))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        restore_modes(modes)  # every module's own mode, as it was
    return len(norms)


@METHODS.register("adabn", "source-free: BatchNorm statistics re-estimated on the target "
                  "(Li et al., ICLR-W 2017)")
class AdaBN(Method):
    name = "adabn"
    source_free = True
    trains_network = False

    def __init__(self, batch_size: int = BATCH) -> None:
        super().__init__()
        self.batch_size = check_count("batch_size", batch_size, 2)
        self.layers = 0

    def setup(self, info: TrainInfo) -> None:
        if info.student is None or info.x is None:
            raise ConfigError("adabn needs the student and the target rows")
        self.layers = recompute_batchnorm(info.student, info.x, info.device, self.batch_size)
        if not self.layers:
            raise ConfigError(
                f"adabn re-estimates BatchNorm statistics, and {type(info.student).__name__} "
                "has no BatchNorm layer that keeps them (track_running_stats=True); use shot, "
                "or a model with BatchNorm (tent trains normalisation layers' parameters)"
            )

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        return {}
