"""In-memory labelled data: the types every loader returns.

Format: images are float32 tensors ``N x C x H x W`` normalised as the loader documents,
tabular features are ``N x D``; labels are int64 tensors ``N`` in ``0..num_classes-1``.

Data built by hand is brought to that format where the meaning is clear: NumPy arrays become
tensors, features of any real or integer dtype become float32, integer labels (and float labels
that are all whole numbers) become int64, and an ``N x 1`` label column is flattened. Anything
else raises a one-line DataError naming the fix: labels outside ``0..num_classes-1``,
fractional labels, several label columns, NaN or infinite features, an empty split.

``Dataset.inputs`` is the input convention (see ``inputs.py``): every registered dataset sets
it; data built by hand leaves it None (unknown), so no conversion or refusal is possible.

An adaptation target may have no labels at all (:func:`unlabelled`): its labels are
``UNLABELLED`` (-1), ``Dataset.labelled`` is False, and its test split is its training rows
(there is nothing else to score). Nothing may compute an accuracy on it: the verbs leave its
split out of every evaluation, and a -1 label fails loudly anywhere one would be read. A
target may also have unlabelled training rows and a labelled test split (the usual protocol
when a few field examples are labelled): ``train_labelled`` is False, ``labelled`` True.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from transferkit.data.inputs import InputSpec
from transferkit.errors import DataError

if TYPE_CHECKING:
    from transferkit.data.file_records import InMemory
    from transferkit.data.normalize import Normalization


def _as_tensor(value: Any, what: str) -> Tensor:
    """A tensor from a tensor, NumPy array or nested list (NumPy memory is shared if it can)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray) and (
        not value.flags.writeable or any(s < 0 for s in value.strides)
    ):
        value = value.copy()  # torch cannot share read-only or reversed NumPy memory
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"{what} must be a tensor or NumPy array of numbers, got {type(value).__name__} "
            f"({reason})"
        ) from None


def _features(value: Any) -> Tensor:
    x = _as_tensor(value, "inputs")
    if x.is_complex():
        raise DataError(f"inputs are {x.dtype}; give real-valued features")
    if x.dim() < 2:
        raise DataError(
            f"inputs have shape {tuple(x.shape)}; give one row per example (N x features or "
            "N x C x H x W), e.g. x.reshape(-1, 1) for a single feature"
        )
    return x if x.dtype == torch.float32 else x.to(torch.float32)


def _labels(value: Any) -> Tensor:
    y = _as_tensor(value, "labels")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.dim() != 1:
        hint = "; one-hot or score columns become indices with y.argmax(1)" if y.dim() == 2 else ""
        raise DataError(
            f"labels have shape {tuple(y.shape)}; give one class index per row (shape N){hint}"
        )
    if y.is_complex():
        raise DataError(f"labels are {y.dtype}; give integer class indices")
    if y.is_floating_point():
        bad = ~torch.isfinite(y)
        bad |= y.nan_to_num(0.0) != y.nan_to_num(0.0).round()
        if bool(bad.any()):
            example = float(y[bad][0])
            raise DataError(
                f"{int(bad.sum())} labels are not whole numbers (e.g. {example:g}); give "
                "integer class indices 0..num_classes-1 (soft labels are not supported)"
            )
    return y if y.dtype == torch.int64 else y.to(torch.int64)


@dataclass(frozen=True)
class Split:
    """One split (train or test) held as tensors; see the module docstring for conversions."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "x", _features(self.x))
        object.__setattr__(self, "y", _labels(self.y))
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"inputs have {self.x.shape[0]} rows but labels have {self.y.shape[0]}; "
                "give one label per input"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int | None) -> Split:
        """The first ``n`` rows (all when ``n`` is None)."""
        return self if n is None else Split(self.x[:n], self.y[:n])


UNLABELLED = -1  # the label of every row of an unlabelled dataset (see unlabelled())


def _check_split(dataset: str, part: str, split: Split, num_classes: int,
                 labelled: bool = True) -> None:
    """Checks that need the dataset's name and class count (cheap unless something is wrong)."""
    where = f"dataset {dataset!r} ({part} split)"
    if len(split) == 0:
        raise DataError(f"{where} has no rows; give at least one example")
    if not bool(torch.isfinite(split.x.sum())):  # a NaN or inf anywhere makes the sum so
        finite = torch.isfinite(split.x).flatten(1)
        count = int((~finite).sum())
        if count:
            rows = int((~finite.all(1)).sum())
            raise DataError(
                f"inputs of {where} hold {count} NaN or infinite values (in {rows} rows); "
                "drop or fill those rows before building the Dataset"
            )
    if not labelled:
        if bool((split.y != UNLABELLED).any()):
            raise DataError(f"{where}: an unlabelled dataset's labels are all {UNLABELLED}; "
                            "build it with transferkit.data.unlabelled(name, x, num_classes)")
        return
    lo, hi = int(split.y.min()), int(split.y.max())
    if lo >= 0 and hi < num_classes:
        return
    if lo == 1 and hi == num_classes:
        fix = "subtract 1"
    elif lo == -1 and hi == 1 and num_classes == 2:
        fix = "map -1/+1 labels to 0/1 with (y + 1) // 2"
    elif lo >= 0:
        fix = f"set num_classes to {hi + 1} or renumber the classes"
    else:
        fix = "renumber the classes from 0"
    raise DataError(
        f"labels of {where} lie in {lo}..{hi} but must lie in 0..{num_classes - 1}: {fix}"
    )


@dataclass(frozen=True)
class Dataset:
    """A named dataset with train and test splits in one input space.

    ``inputs`` is the input convention; None means unknown (data built by hand).
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    description: str = ""
    inputs: InputSpec | None = None
    # The original label values in class-index order (data files); None for built-in datasets.
    classes: tuple[Any, ...] | None = None
    # False for an adaptation target without labels (see unlabelled()): never scored.
    labelled: bool = True
    # False when the training rows have no labels (all of an unlabelled target's, or a
    # target's whose test split alone is labelled): never trained on with labels.
    train_labelled: bool = True
    # What each training row is called where it came from (an image folder's file paths), for
    # predictions a user can match to their files; None: rows are known by their index.
    row_names: tuple[str, ...] | None = None
    # The feature normalisation fitted on the training rows (``normalize`` of a data file);
    # saved with a model, so that its predictions read new rows with the training statistics.
    normalization: Normalization | None = None
    # A CSV read with a header: the names of its feature columns, in the order of x's columns
    # (saved with a model, so that its predictions match a file's columns by name); None for
    # other sources.
    columns: tuple[str, ...] | None = None
    # The header name of the CSV column read as labels; None when there is none (or no header).
    label_column: str | None = None
    # An image folder read with ``size``/``channels``: those given, e.g. {"size": 32} (saved
    # with a model, so that its predictions read a field folder as its training images were);
    # None for other sources, or a folder read with neither.
    image_read: dict[str, int] | None = None
    # The arrays in memory it was read from (``from_arrays``; see with_origin), read again
    # where a file would be: a pair's target with the source's classes, rows a model predicts.
    # Not an argument, so ``replace`` leaves a changed copy without it.
    origin: InMemory | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise DataError(f"a dataset's name must be a non-empty string (it names the data "
                            f"in run records), got {self.name!r}")
        if self.train_labelled and not self.labelled:
            raise DataError(f"dataset {self.name!r}: labelled training rows and an unlabelled "
                            "test split; give the test labels, or set train_labelled=False too "
                            "(transferkit.data.unlabelled builds a dataset without labels)")
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise DataError(
                f"num_classes of dataset {self.name!r} must be a positive integer, got {k!r}"
            )
        object.__setattr__(self, "num_classes", int(k))
        for part in ("train", "test"):
            split = getattr(self, part)
            if isinstance(split, tuple | list) and len(split) == 2:
                split = Split(*split)
                object.__setattr__(self, part, split)
            elif not isinstance(split, Split):
                raise DataError(
                    f"{part} of dataset {self.name!r} must be a Split(x, y), "
                    f"got {type(split).__name__}"
                )
            has_labels = self.train_labelled if part == "train" else self.labelled
            _check_split(self.name, part, split, self.num_classes, has_labels)
        if self.row_names is not None and len(self.row_names) != len(self.train):
            raise DataError(f"dataset {self.name!r}: {len(self.row_names)} row names for "
                            f"{len(self.train)} training rows")
        self._check_columns()
        train_shape, test_shape = self.input_shape, tuple(self.test.x.shape[1:])
        if train_shape != test_shape:
            raise DataError(
                f"dataset {self.name!r}: train inputs are {train_shape} but test inputs "
                f"{test_shape}; give both splits the same input shape"
            )
        if self.inputs is not None:
            if not isinstance(self.inputs, InputSpec):
                raise DataError(
                    f"inputs of dataset {self.name!r} must be an InputSpec or None, "
                    f"got {type(self.inputs).__name__}"
                )
            if self.inputs.shape is None:
                object.__setattr__(self, "inputs", replace(self.inputs, shape=train_shape))
            elif self.inputs.shape != train_shape:
                raise DataError(
                    f"dataset {self.name!r}: inputs gives shape {self.inputs.shape} but the "
                    f"data has {train_shape}; fix the InputSpec's shape or leave it None"
                )

    def _check_columns(self) -> None:
        """``columns``: one name per feature of flat inputs; ``label_column``: a name."""
        if self.label_column is not None and not isinstance(self.label_column, str):
            raise DataError(f"dataset {self.name!r}: label_column must be a column name or None, "
                            f"got {type(self.label_column).__name__}")
        if self.columns is None:
            return
        names = self.columns
        if isinstance(names, str) or not isinstance(names, Sequence) or not all(
                isinstance(n, str) for n in names):
            raise DataError(f"dataset {self.name!r}: columns must be a sequence of column names "
                            f"or None, got {names!r}")
        names = tuple(names)
        shape = self.input_shape
        if len(shape) != 1 or len(names) != shape[0]:
            raise DataError(f"dataset {self.name!r}: {len(names)} column names for inputs "
                            f"{'x'.join(map(str, shape))}; give one name per feature, or none")
        object.__setattr__(self, "columns", names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def with_inputs(self, spec: InputSpec) -> Dataset:
        """The same data stored in convention ``spec`` (a converted copy; self when equal)."""
        if self.inputs is None:
            raise DataError(
                f"dataset {self.name!r} does not record its input convention; set its inputs"
            )
        if spec.shape not in (None, self.input_shape):
            raise DataError(
                f"dataset {self.name!r} has inputs {self.input_shape}, not {spec.shape}"
            )
        if self.inputs.same_scale(spec):
            return self
        source, target = self.inputs, InputSpec(spec.mean, spec.std, self.input_shape)

        def convert(split: Split) -> Split:
            return Split(source.convert(split.x, target), split.y)

        note = f"converted to {target.scale()}"
        return replace(
            self,
            train=convert(self.train),
            test=convert(self.test),
            inputs=target,
            description=f"{self.description}; {note}" if self.description else note,
        )


@dataclass(frozen=True)
class DomainPair:
    """Labelled source and (for training, unlabelled) target data in one input space."""

    name: str
    source: Dataset
    target: Dataset

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise DataError(f"a domain pair's name must be a non-empty string such as "
                            f"'source->target', got {self.name!r}")
        for part in ("source", "target"):
            given = getattr(self, part)
            if not isinstance(given, Dataset):
                raise DataError(
                    f"pair {self.name}: {part} must be a Dataset(name, train, test, "
                    f"num_classes), got {type(given).__name__}"
                )
        if not (self.source.labelled and self.source.train_labelled):
            raise DataError(f"pair {self.name}: the source domain {self.source.name!r} has no "
                            "labels; adaptation learns the task from labelled source data")
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
        src, tgt = self.source.inputs, self.target.inputs
        if src is not None and tgt is not None and not src.same_scale(tgt):
            raise DataError(
                f"pair {self.name}: source inputs are in {src.scale()} but target inputs in "
                f"{tgt.scale()}; bring both to one scale (e.g. target.with_inputs(source.inputs))"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.source.input_shape

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def inputs(self) -> InputSpec | None:
        """The pair's convention: known only when both domains record the same one."""
        src, tgt = self.source.inputs, self.target.inputs
        return src if src is not None and tgt is not None else None

    def with_inputs(self, spec: InputSpec) -> DomainPair:
        """Both domains stored in convention ``spec`` (converted copies)."""
        return DomainPair(self.name, self.source.with_inputs(spec), self.target.with_inputs(spec))


def with_origin(data: Dataset, origin: InMemory) -> Dataset:
    """``data``, just built from the arrays ``origin`` holds, marked as read from them."""
    object.__setattr__(data, "origin", origin)
    return data


def unlabelled(name: str, x: Any, num_classes: int, *, inputs: InputSpec | None = None,
               classes: tuple[Any, ...] | None = None, description: str = "",
               row_names: tuple[str, ...] | None = None) -> Dataset:
    """A dataset of inputs without labels, e.g. an adaptation target from the field: its
    training and test splits are the same rows, labelled ``UNLABELLED``; ``num_classes`` (and
    ``classes``) are the task's, from the labelled source or the trained model."""
    rows = _features(x)
    if classes is not None and len(classes) != num_classes:
        raise DataError(f"dataset {name!r}: {len(classes)} class names for {num_classes} "
                        "classes; give one name per class, or none")
    split = Split(rows, torch.full((rows.shape[0],), UNLABELLED, dtype=torch.int64))
    return Dataset(name, split, split, num_classes, description, inputs, classes, labelled=False,
                   train_labelled=False, row_names=row_names)
