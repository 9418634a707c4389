"""CIFAR architectures of the published distillation tables (CRD, Tian et al. 2020; RepDistiller;
mdistiller): ``resnet8x4``, ``resnet32x4``, ``resnet20``, ``resnet56``, ``wrn_16_2``,
``wrn_40_2``, ``vgg8``, ``vgg13`` and ``mobilenetv2``.

Every factory returns a :class:`~transferkit.models.base.Classifier` whose ``features`` is an
``nn.Sequential`` with the named children ``stem``, ``stage1`` ... ``stageN`` and ``pool``, so
the module paths are ``features.stem``, ``features.stageK``, ``features.pool`` and ``head``.
A stage is the group of blocks at one resolution; its output is ``N x C x H x W`` and is the
feature map RepDistiller hands to feature-based methods (FitNet, AT, ...). ``pool`` turns the
last stage's map into the ``N x D`` vector that ``head = Linear(D, num_classes)`` reads.

The builds follow the published architectures layer by layer, so parameter counts on 3x32x32
with 100 classes match the tables. They take any ``C x H x W`` input: 3x3 stride-2 convolutions
with padding 1 and ``ceil_mode`` max-pools map a 1x1 map to 1x1, so small inputs (1x8x8)
shrink to 1x1 and stay there, and the final pool is adaptive.

Initialisation: convolutions kaiming-normal (fan-out, ReLU gain) with zero bias, BatchNorm
weight 1 and bias 0, linear layers PyTorch's default.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from transferkit.errors import ConfigError
from transferkit.models.base import (
    Classifier,
    check_num_classes,
    check_probability,
    image_shape,
    resolve_options,
)
from transferkit.models.zoo import MODELS


def _check_width(model: str, value: Any) -> float:
    """A channel multiplier: a finite number > 0."""
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"model {model!r}: width must be a number > 0, got {value!r}")
    return float(value)


def _scaled(channels: int, width: float) -> int:
    """``int(channels * width)``, at least 1 (RepDistiller's MobileNetV2 rounds down too)."""
    return max(1, int(channels * width + 1e-6))


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-out, ReLU), zero conv bias, BatchNorm weight 1 bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _features(stem: nn.Module, stages: Sequence[nn.Module], pool: nn.Module) -> nn.Sequential:
    """``Sequential(stem, stage1, ..., stageN, pool)`` with those child names."""
    named: list[tuple[str, nn.Module]] = [("stem", stem)]
    named += [(f"stage{k}", stage) for k, stage in enumerate(stages, start=1)]
    named.append(("pool", pool))
    return nn.Sequential(OrderedDict(named))


def _global_pool() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _classifier(features: nn.Sequential, dim: int, num_classes: int) -> Classifier:
    model = Classifier(features, nn.Linear(dim, num_classes))
    _init_weights(model)
    return model


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


# ----------------------------------------------------------------------------------------------
# ResNet (He et al. 2016), CIFAR version


class BasicBlock(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU.

    The shortcut is the identity, or conv1x1(stride) -> BN when the shape changes.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _resnet(
    name: str,
    depth: int,
    filters: tuple[int, int, int, int],
    input_shape: tuple[int, ...],
    num_classes: int,
    options: dict[str, Any],
) -> Classifier:
    """stem conv3x3(f0)-BN-ReLU; stages of (depth - 2) / 6 BasicBlocks with f1, f2, f3
    channels and strides 1, 2, 2; global average pool; head Linear(f3, classes)."""
    channels, _, _ = image_shape(name, input_shape)
    classes = check_num_classes(num_classes)
    opts = resolve_options(name, options, {"width": 1.0})
    width = _check_width(name, opts["width"])
    f0, *widths = (_scaled(f, width) for f in filters)
    blocks = (depth - 2) // 6
    stages: list[nn.Module] = []
    cin = f0
    for cout, stride in zip(widths, (1, 2, 2), strict=True):
        layers = [
            BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
            for i in range(blocks)
        ]
        stages.append(nn.Sequential(*layers))
        cin = cout
    stem = _conv_bn_relu(channels, f0, 3)
    return _classifier(_features(stem, stages, _global_pool()), cin, classes)


@MODELS.register(
    "resnet8x4", "CIFAR ResNet-8x4: 1 BasicBlock/stage, 64-128-256 ch (He et al. 2016; CRD tables)"
)
def resnet8x4(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> Classifier:
    """RepDistiller's ``resnet8x4``: stem conv3x3(32) -> BN -> ReLU; stage1..stage3 one
    BasicBlock each, 64/128/256 channels at strides 1/2/2 (32x32 -> 32, 16, 8); pool: global
    average pool; head Linear(256, classes). Option ``width`` (1.0) scales every channel count.
    """
    return _resnet("resnet8x4", 8, (32, 64, 128, 256), input_shape, num_classes, options)


@MODELS.register(
    "resnet32x4", "CIFAR ResNet-32x4: 5 BasicBlocks/stage, 64-128-256 ch (He et al. 2016; CRD)"
)
def resnet32x4(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> Classifier:
    """RepDistiller's ``resnet32x4``: stem conv3x3(32) -> BN -> ReLU; stage1..stage3 five
    BasicBlocks each, 64/128/256 channels at strides 1/2/2 (32x32 -> 32, 16, 8); pool: global
    average pool; head Linear(256, classes). Option ``width`` (1.0) scales every channel count.
    """
    return _resnet("resnet32x4", 32, (32, 64, 128, 256), input_shape, num_classes, options)


@MODELS.register(
    "resnet20", "CIFAR ResNet-20: 3 BasicBlocks/stage, 16-32-64 ch (He et al. 2016; CRD tables)"
)
def resnet20(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> Classifier:
    """RepDistiller's ``resnet20``: stem conv3x3(16) -> BN -> ReLU; stage1..stage3 three
    BasicBlocks each, 16/32/64 channels at strides 1/2/2 (32x32 -> 32, 16, 8); pool: global
    average pool; head Linear(64, classes). Option ``width`` (1.0) scales every channel count.
    """
    return _resnet("resnet20", 20, (16, 16, 32, 64), input_shape, num_classes, options)


@MODELS.register(
    "resnet56", "CIFAR ResNet-56: 9 BasicBlocks/stage, 16-32-64 ch (He et al. 2016; CRD tables)"
)
def resnet56(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> Classifier:
    """RepDistiller's ``resnet56``: stem conv3x3(16) -> BN -> ReLU; stage1..stage3 nine
    BasicBlocks each, 16/32/64 channels at strides 1/2/2 (32x32 -> 32, 16, 8); pool: global
    average pool; head Linear(64, classes). Option ``width`` (1.0) scales every channel count.
    """
    return _resnet("resnet56", 56, (16, 16, 32, 64), input_shape, num_classes, options)


# ----------------------------------------------------------------------------------------------
# Wide ResNet (Zagoruyko & Komodakis 2016)


class WideBlock(nn.Module):
    """Pre-activation block: BN -> ReLU -> conv3x3(stride) -> BN -> ReLU [-> Dropout] -> conv3x3,
    plus the shortcut.

    The shortcut is the identity, or (when the channel count changes) a bare conv1x1(stride)
    applied to the block's activated input, as in the WRN reference code.
    """

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        elif stride != 1:
            raise ValueError("a WRN block that keeps its width must have stride 1")

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        out = self.conv2(self.dropout(out))
        return out + (x if self.shortcut is None else self.shortcut(act))


def _wrn(
    name: str,
    depth: int,
    widen: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    options: dict[str, Any],
) -> Classifier:
    """stem conv3x3(16); stages of (depth - 4) / 6 WideBlocks with 16k, 32k, 64k channels at
    strides 1, 2, 2; pool BN -> ReLU -> global average pool; head Linear(64k, classes)."""
    channels, _, _ = image_shape(name, input_shape)
    classes = check_num_classes(num_classes)
    opts = resolve_options(name, options, {"width": 1.0, "dropout": 0.0})
    width = _check_width(name, opts["width"])
    dropout = check_probability(name, "dropout", opts["dropout"])
    f0, *widths = (_scaled(f, width) for f in (16, 16 * widen, 32 * widen, 64 * widen))
    blocks = (depth - 4) // 6
    stages: list[nn.Module] = []
    cin = f0
    for cout, stride in zip(widths, (1, 2, 2), strict=True):
        layers = [
            WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, dropout)
            for i in range(blocks)
        ]
        stages.append(nn.Sequential(*layers))
        cin = cout
    stem = nn.Conv2d(channels, f0, 3, padding=1, bias=False)
    pool = nn.Sequential(
        nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    return _classifier(_features(stem, stages, pool), cin, classes)


@MODELS.register(
    "wrn_16_2", "Wide ResNet 16-2: pre-activation, 32-64-128 ch (Zagoruyko & Komodakis 2016; CRD)"
)
def wrn_16_2(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> Classifier:
    """WRN-16-2 (RepDistiller's ``wrn_16_2``): stem conv3x3(16), no BN (the blocks are
    pre-activation); stage1..stage3 two WideBlocks each, 32/64/128 channels at strides 1/2/2
    (32x32 -> 32, 16, 8), the outputs being block sums before any BN; pool: the final BN ->
    ReLU, then global average pool; head Linear(128, classes). Options: ``width`` (1.0) scales
    every channel count; ``dropout`` (0.0) between the two convs of each block.
    """
    return _wrn("wrn_16_2", 16, 2, input_shape, num_classes, options)


@MODELS.register(
    "wrn_40_2", "Wide ResNet 40-2: pre-activation, 32-64-128 ch (Zagoruyko & Komodakis 2016; CRD)"
)
def wrn_40_2(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> Classifier:
    """WRN-40-2 (RepDistiller's ``wrn_40_2``): as :func:`wrn_16_2` with six WideBlocks per
    stage. Options: ``width`` (1.0) scales every channel count; ``dropout`` (0.0).
    """
    return _wrn("wrn_40_2", 40, 2, input_shape, num_classes, options)


# ----------------------------------------------------------------------------------------------
# VGG with BatchNorm (Simonyan & Zisserman 2015), CIFAR version

_VGG_CFG: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


def _vgg(
    name: str, input_shape: tuple[int, ...], num_classes: int, options: dict[str, Any]
) -> Classifier:
    """Five groups of conv3x3 -> BN -> ReLU; max-pool 2 at the start of stage2..stage4 (and of
    stage5 for inputs of 64 px or more); global average pool; head Linear(512, classes)."""
    channels, height, width_px = image_shape(name, input_shape)
    classes = check_num_classes(num_classes)
    opts = resolve_options(name, options, {"width": 1.0})
    width = _check_width(name, opts["width"])
    stages: list[nn.Module] = []
    cin = channels
    for k, group in enumerate(_VGG_CFG[name], start=1):
        layers: list[nn.Module] = []
        if k in (2, 3, 4) or (k == 5 and min(height, width_px) >= 64):
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        for c in group:
            cout = _scaled(c, width)
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True)]
            cin = cout
        stages.append(nn.Sequential(*layers))
    return _classifier(_features(nn.Identity(), stages, _global_pool()), cin, classes)


@MODELS.register(
    "vgg8", "CIFAR VGG-8 with BN: 1 conv x 64-128-256-512-512 (Simonyan & Zisserman 2015; CRD)"
)
def vgg8(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> Classifier:
    """RepDistiller's ``vgg8``: groups [[64], [128], [256], [512], [512]].

    stem: identity (VGG has no stem; kept so every model has the same paths). stageK: the K-th
    group of conv3x3 (with bias) -> BN -> ReLU; stage2..stage4 start with max-pool 2, and so
    does stage5 when the input is 64 px or more (RepDistiller pools there only for 64x64
    inputs), so 32x32 gives stage outputs 32, 16, 8, 4, 4. The pools use ``ceil_mode`` (the
    same as floor for even sizes; 28x28 gives 28, 14, 7, 4, 4; 1x1 stays 1x1). A stage's
    output is the group's last ReLU before the next pool, as RepDistiller's feature list.
    pool: global average pool. head: Linear(512, classes). Option ``width`` (1.0) scales
    every channel count.
    """
    return _vgg("vgg8", input_shape, num_classes, options)


@MODELS.register(
    "vgg13", "CIFAR VGG-13 with BN: 2 convs x 64-128-256-512-512 (Simonyan & Zisserman 2015; CRD)"
)
def vgg13(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> Classifier:
    """RepDistiller's ``vgg13``: groups [[64, 64], [128, 128], [256, 256], [512, 512],
    [512, 512]], laid out as :func:`vgg8`. Option ``width`` (1.0) scales every channel count.
    """
    return _vgg("vgg13", input_shape, num_classes, options)


# ----------------------------------------------------------------------------------------------
# MobileNetV2 (Sandler et al. 2018), RepDistiller's CIFAR version


class InvertedResidual(nn.Module):
    """conv1x1(t*cin) -> BN -> ReLU -> depthwise conv3x3(stride) -> BN -> ReLU -> conv1x1(cout)
    -> BN, plus the input when the stride is 1 and ``cin == cout``.

    As in RepDistiller, the expansion conv is kept for t = 1 and the activations are ReLU.
    """

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


# (expands, channels c, blocks n, stride s) per block group, grouped into stages as
# RepDistiller's feature list: stage1 = groups 1-2, stage2 = 3, stage3 = 4-5, stage4 = 6-7.
# ``expands``: the group uses the ``expansion`` option (6); the first group has t = 1.
_MOBILENETV2_STAGES: tuple[tuple[tuple[bool, int, int, int], ...], ...] = (
    ((False, 16, 1, 1), (True, 24, 2, 1)),
    ((True, 32, 3, 2),),
    ((True, 64, 4, 2), (True, 96, 3, 1)),
    ((True, 160, 3, 2), (True, 320, 1, 1)),
)


@MODELS.register(
    "mobilenetv2",
    "CIFAR MobileNetV2, width 0.5 by default (Sandler et al. 2018; CRD student 'MobileNetV2')",
)
def mobilenetv2(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> Classifier:
    """RepDistiller's ``mobile_half`` (``mobilenetv2_T_w(6, 0.5)``) at the default options.

    stem: conv3x3(32w, stride ``stem_stride``) -> BN -> ReLU. Inverted-residual groups
    (t, c, n, s) = (1, 16, 1, 1), (6, 24, 2, 1) | (6, 32, 3, 2) | (6, 64, 4, 2), (6, 96, 3, 1)
    | (6, 160, 3, 2), (6, 320, 1, 1), with channels ``int(c * w)``; the bars split them into
    stage1..stage4 (RepDistiller's feature maps f1..f4: 16, 16, 8, 4, 2 px for stem and
    stages on 32x32, with 12, 16, 48, 160 channels at w = 0.5). pool: conv1x1(1280, or
    ``int(1280 * w)`` when w > 1) -> BN -> ReLU, then global average pool. head:
    Linear(1280, classes).

    Options: ``width`` w (0.5); ``expansion`` t (6) for every group but the first;
    ``stem_stride`` (2, as RepDistiller and mdistiller; 1 keeps the stem at full resolution,
    which adds compute but no parameters).
    """
    name = "mobilenetv2"
    channels, _, _ = image_shape(name, input_shape)
    classes = check_num_classes(num_classes)
    opts = resolve_options(name, options, {"width": 0.5, "expansion": 6, "stem_stride": 2})
    width = _check_width(name, opts["width"])
    expansion = opts["expansion"]
    if isinstance(expansion, bool) or not isinstance(expansion, int) or expansion < 1:
        raise ConfigError(f"model {name!r}: expansion must be a positive int, got {expansion!r}")
    stem_stride = opts["stem_stride"]
    if stem_stride not in (1, 2) or isinstance(stem_stride, bool):
        raise ConfigError(f"model {name!r}: stem_stride must be 1 or 2, got {stem_stride!r}")
    cin = _scaled(32, width)
    stem = _conv_bn_relu(channels, cin, 3, stride=stem_stride)
    stages: list[nn.Module] = []
    for groups in _MOBILENETV2_STAGES:
        blocks: list[nn.Module] = []
        for expands, c, n, s in groups:
            cout = _scaled(c, width)
            t = expansion if expands else 1
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        stages.append(nn.Sequential(*blocks))
    last = _scaled(1280, width) if width > 1.0 else 1280
    pool = nn.Sequential(_conv_bn_relu(cin, last, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return _classifier(_features(stem, stages, pool), last, classes)
