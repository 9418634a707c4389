"""Cross-entropy on labelled inputs: teachers and the source-only baseline."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from transferkit.methods.base import Batch, Method, Outputs, check_fraction


class Supervised(Method):
    """``L = mean_i CE(f(x_i), y_i)``, optionally with label smoothing."""

    name = "supervised"
    needs_labels = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = check_fraction("label_smoothing", label_smoothing)

    def losses(self, batch: Batch, out: Outputs, progress: float) -> dict[str, Tensor]:
        assert batch.y is not None
        return {"ce": F.cross_entropy(out.logits, batch.y, label_smoothing=self.label_smoothing)}
