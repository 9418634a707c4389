"""The classifier convention every registry model follows, plus option and shape checks.

A model is ``logits = head(features(x))`` with ``features`` mapping a batch to ``N x D`` and
``head = Linear(D, num_classes)``: distillation reads the logits, domain adaptation reads the
``N x D`` features of the same network, and neither has to know the architecture.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from transferkit.errors import ConfigError


class Classifier(nn.Module):
    """``forward(x) = head(features(x))``; ``features(x)`` is ``N x feature_dim``.

    ``head`` is an ``nn.Linear``, or an ``nn.Sequential`` that starts and ends with one (a
    multi-layer classifier, as MCD's)."""

    def __init__(self, features: nn.Module, head: nn.Linear | nn.Sequential) -> None:
        super().__init__()
        linears = [head] if isinstance(head, nn.Linear) else (
            [m for m in head if isinstance(m, nn.Linear)] if isinstance(head, nn.Sequential)
            else [])
        if not linears or (isinstance(head, nn.Sequential)
                           and not (head[0] is linears[0] and head[-1] is linears[-1])):
            raise TypeError(f"head must be an nn.Linear or an nn.Sequential from one to another, "
                            f"got {type(head).__name__}")
        self.features = features
        self.head = head
        # plain ints, not read from the head: TorchScript compiles these properties, and a
        # Sequential cannot be indexed there
        self._first, self._last = linears[0].in_features, linears[-1].out_features

    @property
    def feature_dim(self) -> int:
        """D, the size of the feature vector the head reads."""
        return int(self._first)

    @property
    def num_classes(self) -> int:
        return int(self._last)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits, features)`` from one pass, for methods that need both."""
        feats = self.features(x)
        return self.head(feats), feats


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes and values, in name order).

    Identifies a teacher exactly: the same weights give the same digest on any device.
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def shape_str(shape: Sequence[int]) -> str:
    """``(1, 28, 28)`` -> ``'1x28x28'``."""
    return "x".join(str(s) for s in shape)


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """The per-sample input shape as a tuple of positive ints (no batch dimension)."""
    try:  # operator.index accepts ints (also NumPy's) and rejects floats and strings
        shape = tuple(operator.index(s) for s in input_shape)
        ok = len(shape) > 0 and all(s > 0 for s in shape)
    except TypeError:
        shape, ok = (), False
    if not ok:
        raise ConfigError(
            f"input_shape must be a non-empty tuple of positive ints such as (1, 28, 28), "
            f"got {input_shape!r}"
        )
    return shape


def check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def resolve_options(
    model: str, options: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """``defaults`` updated with ``options``; an option not in ``defaults`` is a ConfigError."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(defaults)) if defaults else "none (it takes no options)"
        raise ConfigError(
            f"model {model!r} has no option {', '.join(repr(u) for u in unknown)}; "
            f"valid options: {valid}"
        )
    return {**defaults, **options}


def check_probability(model: str, key: str, value: Any) -> float:
    """A dropout probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ConfigError(f"model {model!r}: {key} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_positive_int(model: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model {model!r}: {key} must be a positive int, got {value!r}")
    return value


def check_widths(model: str, key: str, value: Any) -> tuple[int, ...]:
    """A sequence of positive ints (a single int is read as one layer)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(
            f"model {model!r}: {key} must be a list of positive ints such as [512], got {value!r}"
        )
    return tuple(check_positive_int(model, key, v) for v in value)


def image_shape(model: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` for convolutional models; other shapes are a ConfigError."""
    shape = check_input_shape(input_shape)
    if len(shape) != 3:
        raise ConfigError(
            f"model {model!r} needs images shaped C x H x W, got input shape {shape_str(shape)}; "
            "use 'mlp' for flat or tabular inputs"
        )
    return shape[0], shape[1], shape[2]


Modes = list[tuple[nn.Module, bool]]


def module_modes(model: nn.Module) -> Modes:
    """Every submodule with its own train/eval mode (they may differ: a frozen BatchNorm)."""
    return [(module, module.training) for module in model.modules()]


def restore_modes(modes: Modes) -> None:
    """Give each module back the mode :func:`module_modes` saw (``model.train(was)`` would
    set them all alike)."""
    for module, training in modes:
        module.training = training


def copy_module(model: nn.Module, fresh: bool = False) -> nn.Module:
    """A deep copy of ``model`` without the forward hooks others put on it (feature taps),
    without gradients; ``fresh=True`` draws new weights (global torch RNG) for every layer
    that has ``reset_parameters``: the same architecture, untrained."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
        reset = getattr(module, "reset_parameters", None)
        if fresh and callable(reset):
            reset()
    for param in twin.parameters():
        param.grad = None
    return twin


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; every submodule's own mode afterwards."""
    modes = module_modes(model)
    model.eval()
    try:
        yield model
    finally:
        restore_modes(modes)


def flat_size(body: nn.Module, shape: Sequence[int]) -> int:
    """Width of ``body``'s flattened output for one sample, from a dummy forward in eval mode.

    Eval mode keeps dropout from drawing random numbers, so building a model consumes the
    same RNG stream whatever its input size.
    """
    with eval_mode(body), torch.no_grad():
        out = body(torch.zeros(1, *shape))
    return int(out.reshape(1, -1).shape[1])
