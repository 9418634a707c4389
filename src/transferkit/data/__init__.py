"""Datasets and domain pairs as in-memory tensors; see ``datasets.py`` and ``pairs.py``."""

from transferkit.data import cifar as _cifar  # noqa: F401  (registers cifar10, cifar100)
from transferkit.data import shift as _shift  # noqa: F401  (registers digits_shifted)
from transferkit.data.base import UNLABELLED, Dataset, DomainPair, Split, unlabelled
from transferkit.data.datasets import DATASETS, load_dataset
from transferkit.data.inputs import InputConverted, InputSpec
from transferkit.data.pairs import PAIRS, load_pair, load_pair_target
from transferkit.data.paths import ENV_VAR, cache_dir, resolve_data_dirs

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "PAIRS",
    "UNLABELLED",
    "Dataset",
    "DomainPair",
    "InputConverted",
    "InputSpec",
    "Split",
    "cache_dir",
    "load_dataset",
    "load_pair",
    "load_pair_target",
    "resolve_data_dirs",
    "unlabelled",
]
