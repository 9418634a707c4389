"""Models: a registry of classifiers that split into ``features`` and ``head``.

``build_model(name, input_shape, num_classes, **options)`` builds a registered model; see
:mod:`transferkit.models.base` for the convention and :mod:`transferkit.models.external`
for models from a factory path or a TorchScript file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from transferkit.models import cifar  # noqa: F401  (registers the CIFAR architectures)
from transferkit.models.base import Classifier, count_parameters
from transferkit.models.external import load_factory, load_torchscript
from transferkit.models.features import FeatureTap, default_layer
from transferkit.models.zoo import MODELS, lenet, mlp, seed_cnn, seed_mlp, small_cnn


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, /, **options: Any
) -> nn.Module:
    """Build the registered model ``name`` for inputs ``input_shape`` (no batch dimension)."""
    factory = MODELS.get(name)
    return factory(tuple(input_shape), num_classes, **options)


__all__ = [
    "MODELS",
    "Classifier",
    "FeatureTap",
    "build_model",
    "count_parameters",
    "default_layer",
    "lenet",
    "load_factory",
    "load_torchscript",
    "mlp",
    "seed_cnn",
    "seed_mlp",
    "small_cnn",
]
