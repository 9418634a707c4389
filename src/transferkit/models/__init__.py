"""Models: a registry of classifiers that split into ``features`` and ``head``.

``build_model(name, input_shape, num_classes, **options)`` builds a registered model; see
:mod:`transferkit.models.base` for the convention and :mod:`transferkit.models.external`
for models from a factory path or a TorchScript file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from transferkit.errors import ConfigError
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


def resolve_model(
    model: nn.Module | str, input_shape: tuple[int, ...], num_classes: int, /, **options: Any
) -> tuple[nn.Module, dict[str, Any] | None]:
    """The module and, when it was built from a name, the spec needed to rebuild it."""
    given = {"input_shape": input_shape, "num_classes": num_classes}
    if clash := sorted(given.keys() & options.keys()):
        key = clash[0]
        raise ConfigError(f"model option {key!r} is set from the data ({given[key]}); remove it")
    if isinstance(model, nn.Module):
        if options:
            raise ConfigError("model options apply only to a model given by name")
        return model, None
    if not isinstance(model, str):
        raise ConfigError(f"model must be an nn.Module or a name, got {type(model).__name__}")
    if ":" in model and model not in MODELS:
        module = load_factory(model, input_shape, num_classes, **options)
    else:
        module = build_model(model, input_shape, num_classes, **options)
    return module, {"name": model, "options": options}


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
    "resolve_model",
    "seed_cnn",
    "seed_mlp",
    "small_cnn",
]
