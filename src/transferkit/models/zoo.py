"""The registered architectures; each factory is ``factory(input_shape, num_classes, **options)``.

Every factory returns a :class:`~transferkit.models.base.Classifier`, so ``model.features``
gives ``N x D`` features and ``model.head`` is ``Linear(D, num_classes)`` (lenet's
``head_hidden`` makes it a small MLP).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from transferkit.errors import ConfigError
from transferkit.models.base import (
    Classifier,
    check_input_shape,
    check_num_classes,
    check_positive_int,
    check_probability,
    check_widths,
    flat_size,
    image_shape,
    resolve_options,
    shape_str,
)
from transferkit.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")

# Spatial steps of a conv body: ("conv", kernel, padding) or ("pool", kernel).
Op = tuple[str, int] | tuple[str, int, int]


def _named_stages(model: Classifier, maps: bool) -> Classifier:
    """Name the model's stages without renaming modules (saved weights keep their keys):
    ``stageK`` is the K-th ReLU of ``features`` (for conv nets only those before the flatten,
    so every stage is a feature map), as a ``layer_aliases`` attribute that layer lookups read.
    """
    aliases: dict[str, str] = {}
    for index, module in enumerate(model.features):
        if maps and isinstance(module, nn.Flatten):
            break
        if isinstance(module, nn.ReLU):
            aliases[f"stage{len(aliases) + 1}"] = f"features.{index}"
    model.layer_aliases = aliases
    return model


def _side_after(side: int, ops: Sequence[Op]) -> int:
    """Height (or width) after ``ops``: conv gives ``s + 2p - k + 1``, pool ``floor(s / k)``."""
    for op in ops:
        side = side + 2 * op[2] - op[1] + 1 if op[0] == "conv" else side // op[1]
        if side < 1:
            return 0
    return side


def _check_min_size(
    model: str, shape: tuple[int, int, int], ops: Sequence[Op], suggestion: str
) -> None:
    """ConfigError naming the shape when some layer of ``ops`` would get an empty input."""
    if _side_after(shape[1], ops) >= 1 and _side_after(shape[2], ops) >= 1:
        return
    least = next(s for s in range(1, 4097) if _side_after(s, ops) >= 1)
    raise ConfigError(
        f"model {model!r} needs images of at least {least}x{least} pixels, got input shape "
        f"{shape_str(shape)}; {suggestion}"
    )


@MODELS.register("mlp", "flatten -> [Linear -> ReLU -> Dropout] per width (default widths=(512,))")
def mlp(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    """Options: ``widths`` (hidden sizes), ``dropout`` after each hidden ReLU, ``input_dropout``.

    Hinton et al. 2015's MNIST teacher is ``widths=(1200, 1200), dropout=0.5,
    input_dropout=0.2``; their student ``widths=(800, 800)``. ``widths=()`` is a linear model.
    """
    shape = check_input_shape(input_shape)
    classes = check_num_classes(num_classes)
    opts = resolve_options("mlp", options, {"widths": (512,), "dropout": 0.0, "input_dropout": 0.0})
    widths = check_widths("mlp", "widths", opts["widths"])
    dropout = check_probability("mlp", "dropout", opts["dropout"])
    input_dropout = check_probability("mlp", "input_dropout", opts["input_dropout"])
    layers: list[nn.Module] = [nn.Flatten()]
    if input_dropout > 0:
        layers.append(nn.Dropout(input_dropout))
    width = math.prod(shape)
    for hidden in widths:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    return _named_stages(Classifier(nn.Sequential(*layers), nn.Linear(width, classes)), False)


_LENET_OPS: tuple[Op, ...] = (("conv", 5, 0), ("pool", 2), ("conv", 5, 0), ("pool", 2))


@MODELS.register("lenet", "digits LeNet of the DANN literature: conv20-conv50-fc500 (>= 16x16)")
def lenet(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    """conv5x5(20) -> pool2 -> ReLU -> conv5x5(50) -> Dropout2d -> pool2 -> ReLU -> fc500 -> ReLU
    -> Dropout; head fc(500, classes).

    The digits network of the domain adaptation literature (e.g. DANN's MNIST -> USPS setups).
    Flatten size: 50*4*4 = 800 for 28x28, 50*5*5 = 1250 for 32x32. Options: ``dropout``
    (0.5); ``bottleneck`` (0 = none): append fc(500, b) -> BatchNorm1d -> ReLU to the features,
    the bottleneck that Transfer-Learning-Library's digits benchmarks put before the head;
    ``bottleneck_dropout`` (0.0): Dropout after that bottleneck (TLlib's AFN classifier uses
    0.5 there; a feature-norm method without it can grow a few units' norms alone);
    ``head_hidden`` ([] = a linear head): the head becomes fc -> BatchNorm1d -> ReLU per width,
    then fc(classes), the multi-layer classifiers of MCD (Saito et al. 2018: 100-100-10 on
    digits), whose second classifier copies the head.
    """
    shape = image_shape("lenet", input_shape)
    classes = check_num_classes(num_classes)
    opts = resolve_options("lenet", options, {"dropout": 0.5, "bottleneck": 0,
                                               "bottleneck_dropout": 0.0, "head_hidden": []})
    dropout = check_probability("lenet", "dropout", opts["dropout"])
    bottleneck = opts["bottleneck"]
    if bottleneck != 0:
        bottleneck = check_positive_int("lenet", "bottleneck", bottleneck)
    bottleneck_dropout = check_probability("lenet", "bottleneck_dropout",
                                           opts["bottleneck_dropout"])
    if bottleneck_dropout and not bottleneck:
        raise ConfigError("lenet: bottleneck_dropout applies to the bottleneck; set "
                          "bottleneck too (e.g. bottleneck=256), or drop bottleneck_dropout")
    hidden = check_widths("lenet", "head_hidden", opts["head_hidden"])
    _check_min_size(
        "lenet", shape, _LENET_OPS, "use 'small-cnn' or 'mlp' for small images such as 8x8 digits"
    )
    body = nn.Sequential(
        nn.Conv2d(shape[0], 20, kernel_size=5),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(20, 50, kernel_size=5),
        nn.Dropout2d(dropout),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
    )
    flat = flat_size(body, shape)
    layers = [*body, nn.Linear(flat, 500), nn.ReLU(), nn.Dropout(dropout)]
    if bottleneck:
        layers += [nn.Linear(500, bottleneck), nn.BatchNorm1d(bottleneck), nn.ReLU()]
        if bottleneck_dropout:
            layers.append(nn.Dropout(bottleneck_dropout))
    head: list[nn.Module] = []
    width = bottleneck or 500
    for h in hidden:
        head += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
        width = h
    head.append(nn.Linear(width, classes))
    return _named_stages(
        Classifier(nn.Sequential(*layers), head[0] if len(head) == 1 else nn.Sequential(*head)),
        True,
    )


_SMALL_CNN_OPS: tuple[Op, ...] = (("conv", 3, 1), ("conv", 3, 1), ("pool", 2))


@MODELS.register("small-cnn", "conv32-conv64 (3x3, same) -> pool2 -> fc128; fits 8x8 digits")
def small_cnn(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    """conv3x3(32, pad 1) -> ReLU -> conv3x3(64, pad 1) -> ReLU -> maxpool2 -> flatten
    -> fc(hidden) -> ReLU [-> Dropout]; head fc(hidden, classes).

    Small enough to train on CPU on 1x8x8 digits (flatten 64*4*4 = 1024). Options:
    ``hidden`` (128), ``dropout`` (0.0) after the hidden ReLU.
    """
    shape = image_shape("small-cnn", input_shape)
    classes = check_num_classes(num_classes)
    opts = resolve_options("small-cnn", options, {"hidden": 128, "dropout": 0.0})
    hidden = check_positive_int("small-cnn", "hidden", opts["hidden"])
    dropout = check_probability("small-cnn", "dropout", opts["dropout"])
    _check_min_size("small-cnn", shape, _SMALL_CNN_OPS, "use 'mlp' for smaller inputs")
    body = nn.Sequential(
        nn.Conv2d(shape[0], 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    flat = flat_size(body, shape)
    layers: list[nn.Module] = [*body, nn.Linear(flat, hidden), nn.ReLU()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return _named_stages(Classifier(nn.Sequential(*layers), nn.Linear(hidden, classes)), True)


_SEED_CNN_OPS: tuple[Op, ...] = (("conv", 3, 0), ("conv", 3, 0), ("conv", 3, 0))


@MODELS.register("seed-cnn", "the seed article's teacher: 3 valid 3x3 convs (32/64/64) -> fc512")
def seed_cnn(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    """conv3x3(32) -> ReLU -> conv3x3(64) -> ReLU -> conv3x3(64) -> ReLU (valid padding, no
    pooling) -> flatten -> fc512 -> ReLU; head fc(512, classes).

    A runnable PyTorch version of the article's Keras teacher. Without pooling, the dense layer
    dominates: for 1x28x28 the flatten size is 22*22*64 = 30976. Takes no options.
    """
    shape = image_shape("seed-cnn", input_shape)
    classes = check_num_classes(num_classes)
    resolve_options("seed-cnn", options, {})
    _check_min_size("seed-cnn", shape, _SEED_CNN_OPS, "use 'seed-mlp' or 'mlp' for smaller inputs")
    body = nn.Sequential(
        nn.Conv2d(shape[0], 32, kernel_size=3),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=3),
        nn.ReLU(),
        nn.Conv2d(64, 64, kernel_size=3),
        nn.ReLU(),
        nn.Flatten(),
    )
    flat = flat_size(body, shape)
    features = nn.Sequential(*body, nn.Linear(flat, 512), nn.ReLU())
    return _named_stages(Classifier(features, nn.Linear(512, classes)), True)


@MODELS.register("seed-mlp", "the seed article's student: flatten -> fc512 -> ReLU")
def seed_mlp(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    """flatten -> fc512 -> ReLU; head fc(512, classes). The article's Keras student; no options."""
    shape = check_input_shape(input_shape)
    classes = check_num_classes(num_classes)
    resolve_options("seed-mlp", options, {})
    features = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 512), nn.ReLU())
    return _named_stages(Classifier(features, nn.Linear(512, classes)), False)
