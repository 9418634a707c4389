"""In-memory labelled data: the types every loader returns.

Format: images are float32 tensors ``N x C x H x W`` normalised as the loader documents,
tabular features are ``N x D``; labels are int64 tensors ``N`` in ``0..num_classes-1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from transferkit.errors import DataError


@dataclass(frozen=True)
class Split:
    """One split (train or test) held as tensors."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"inputs have {self.x.shape[0]} rows but labels have {self.y.shape[0]}; "
                "give one label per input"
            )
        if self.y.dtype != torch.int64:
            raise DataError(f"labels must be int64, got {self.y.dtype}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int | None) -> Split:
        """The first ``n`` rows (all when ``n`` is None)."""
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Dataset:
    """A named dataset with train and test splits in one input space."""

    name: str
    train: Split
    test: Split
    num_classes: int
    description: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


@dataclass(frozen=True)
class DomainPair:
    """Labelled source and (for training, unlabelled) target data in one input space."""

    name: str
    source: Dataset
    target: Dataset

    def __post_init__(self) -> None:
        if self.source.input_shape != self.target.input_shape:
            raise DataError(
                f"pair {self.name}: source inputs {self.source.input_shape} and target inputs "
                f"{self.target.input_shape} differ; bring both to one size and channel count"
            )
        if self.source.num_classes != self.target.num_classes:
            raise DataError(
                f"pair {self.name}: source has {self.source.num_classes} classes, "
                f"target {self.target.num_classes}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.source.input_shape

    @property
    def num_classes(self) -> int:
        return self.source.num_classes
