"""The model plus its methods as one module whose forward returns the named losses.

Wrapping both in one module lets DistributedDataParallel synchronise the gradients of the
model and of the methods' own modules (a domain discriminator) in a single pass. The model
runs once per step, on source and target inputs together, and every method reads the same
outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transferkit.methods.base import Batch, Method, Outputs
from transferkit.models.features import FeatureTap


class Objective(nn.Module):
    def __init__(self, model: nn.Module, methods: list[Method], feature_layer: str | None = None):
        super().__init__()
        self.model = model
        self.methods = nn.ModuleList(methods)
        self.needs_target = any(m.needs_target for m in methods)
        self.needs_features = any(m.needs_features for m in methods)
        self.tap = FeatureTap(model, feature_layer) if self.needs_features else None

    def forward(self, batch: Batch, progress: float) -> dict[str, Tensor]:
        out = self.outputs(batch)
        losses: dict[str, Tensor] = {}
        for method in self.methods:
            for key, value in method.losses(batch, out, progress).items():
                losses[f"{method.name}.{key}" if key in losses else key] = value
        return losses

    def outputs(self, batch: Batch) -> Outputs:
        if not self.needs_target:
            logits = self.model(batch.x)
            return Outputs(logits, self._features())
        assert batch.x_target is not None
        n = batch.x.shape[0]
        logits = self.model(torch.cat([batch.x, batch.x_target]))
        features = self._features()
        return Outputs(
            logits[:n],
            None if features is None else features[:n],
            logits[n:],
            None if features is None else features[n:],
            features,
        )

    def _features(self) -> Tensor | None:
        return None if self.tap is None else self.tap.value

    def method_metrics(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for method in self.methods:
            values.update(method.metrics())
        return values
