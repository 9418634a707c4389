"""Domain pairs: a labelled source and a target dataset brought to one input space.

``load_pair(name)`` returns a :class:`DomainPair` whose two datasets share one input shape and
one normalisation. Format: float32 ``N x C x H x W`` with every pixel mapped from [0, 1] to
[-1, 1] by ``x' = (x - 0.5) / 0.5`` (the convention of the DANN line of work), int64 labels in
``0..9``. Undo it with ``x = 0.5 * x' + 0.5``. Both datasets record it as
``inputs=InputSpec(mean=0.5, std=0.5)``.

| pair | input | how the domains are brought together |
| --- | --- | --- |
| mnist->usps, usps->mnist | 1x28x28 | USPS 16x16 resized to 28x28, bilinear |
| mnist->mnist_m | 3x32x32 | MNIST zero-padded 28 -> 32 (2 px a side), grey repeated to RGB |
| digits->digits_shifted | 1x8x8 | already aligned |

USPS digits fill their whole frame while MNIST digits sit in a 20x20 box inside 28x28; that
difference in scale is left in on purpose, it is part of the domain gap the methods must bridge.
Both splits of both domains are returned with labels; training code must ignore target labels
and use them only for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from transferkit.data.base import Dataset, DomainPair, Split
from transferkit.data.datasets import load_dataset
from transferkit.data.inputs import InputSpec
from transferkit.registry import Registry

Transform = Callable[[Tensor], Tensor]
PAIR_MEAN = 0.5
PAIR_STD = 0.5
PAIR_INPUTS = InputSpec(mean=PAIR_MEAN, std=PAIR_STD)  # recorded by every pair


def resize_bilinear(size: int) -> Transform:
    """Resize ``N x C x h x w`` to ``size x size`` by bilinear interpolation (stays in [0, 1])."""

    def apply(x: Tensor) -> Tensor:
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    return apply


def pad_to_rgb32(x: Tensor) -> Tensor:
    """``N x 1 x 28 x 28`` -> ``N x 3 x 32 x 32``: 2 px of zero (background) a side, grey to RGB."""
    return F.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)


def normalise(x: Tensor) -> Tensor:
    """``(x - 0.5) / 0.5``: [0, 1] -> [-1, 1]; returns a new tensor."""
    return x.sub(PAIR_MEAN).div_(PAIR_STD)


def _to_pair_space(data: Dataset, transform: Transform | None, note: str) -> Dataset:
    def convert(split: Split) -> Split:
        x = split.x if transform is None else transform(split.x)
        return Split(normalise(x).contiguous(), split.y)

    steps = f"{note}, scaled to [-1, 1]" if note else "scaled to [-1, 1]"
    desc = f"{data.description}; {steps}" if data.description else steps
    if data.inputs is not None:  # the transforms expect [0, 1]
        data = data.with_inputs(InputSpec(0.0, 1.0))
    train, test = convert(data.train), convert(data.test)
    return replace(data, train=train, test=test, description=desc, inputs=PAIR_INPUTS)


@dataclass(frozen=True)
class PairSpec:
    """How to load and align one pair; calling it loads both datasets and builds the pair."""

    name: str
    source: str
    target: str
    source_transform: Transform | None = None
    target_transform: Transform | None = None
    source_note: str = ""  # how the source is aligned, for its description
    target_note: str = ""

    def build(self, source: Dataset, target: Dataset) -> DomainPair:
        """Align already loaded standalone datasets (inputs in [0, 1]); they are not modified."""
        return DomainPair(
            self.name,
            _to_pair_space(source, self.source_transform, self.source_note),
            _to_pair_space(target, self.target_transform, self.target_note),
        )

    def load_target(self, data_dir: str | Path | None = None, download: bool = True) -> Dataset:
        """The target side alone, aligned as in the pair; the source is never loaded
        (source-free adaptation)."""
        target = load_dataset(self.target, data_dir, download)
        return _to_pair_space(target, self.target_transform, self.target_note)

    def __call__(self, data_dir: str | Path | None = None, download: bool = True) -> DomainPair:
        return self.build(
            load_dataset(self.source, data_dir, download),
            load_dataset(self.target, data_dir, download),
        )


PAIRS: Registry[PairSpec] = Registry("domain pair")

_SPECS = (
    (
        PairSpec(
            "mnist->usps",
            "mnist",
            "usps",
            target_transform=resize_bilinear(28),
            target_note="resized 16->28 bilinear",
        ),
        "MNIST -> USPS digits, 1x28x28 (USPS resized 16->28)",
    ),
    (
        PairSpec(
            "usps->mnist",
            "usps",
            "mnist",
            source_transform=resize_bilinear(28),
            source_note="resized 16->28 bilinear",
        ),
        "USPS -> MNIST digits, 1x28x28 (USPS resized 16->28)",
    ),
    (
        PairSpec(
            "mnist->mnist_m",
            "mnist",
            "mnist_m",
            source_transform=pad_to_rgb32,
            source_note="padded 28->32, grey to RGB",
        ),
        "MNIST -> MNIST-M (digits over colour photos), 3x32x32",
    ),
    (
        PairSpec(
            "digits->digits_shifted",
            "digits",
            "digits_shifted",
        ),
        "sklearn digits -> the same digits as if from another scanner, 1x8x8 (no download)",
    ),
)
for _spec, _description in _SPECS:
    PAIRS.register(_spec.name, _description)(_spec)


def load_pair(name: str, data_dir: str | Path | None = None, download: bool = True) -> DomainPair:
    """Load a registered pair; an unknown name raises UnknownNameError listing valid ones."""
    return PAIRS.get(name)(data_dir, download)


def load_pair_target(
    name: str, data_dir: str | Path | None = None, download: bool = True
) -> Dataset:
    """The target dataset of a registered pair, in the pair's input space, without reading
    the source."""
    return PAIRS.get(name).load_target(data_dir, download)
