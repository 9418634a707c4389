"""Your own data from files: ``.npz``, ``.mat``, ``.csv`` or a folder of images.

``load_file_dataset(path, options)`` returns a :class:`Dataset` and ``load_file_pair(source,
target, options)`` a :class:`DomainPair` (either side may also be a registered dataset name).

- ``.npz``: inputs from the first array of ``x X x_train X_train inputs features fts data`` (or
  option ``x``), labels from ``y Y y_train Y_train labels label targets target`` (or option
  ``y``): NumPy's, Keras' (``mnist.npz``) and scikit-learn's (``data``/``target``) names.
- ``.mat`` (MATLAB v4-v7; v7.3 is HDF5 and refused): the same names; labels ``N x 1`` or
  ``1 x N`` are flattened, a char matrix loses the spaces that pad its rows (as ``cellstr``),
  a cell array holds one number or string per row; sparse inputs are read dense. Structs,
  objects and cells of features are refused by name.

Each array's size is checked before it is read: an ``.npz`` member whose header declares more
than it holds (a crafted or truncated file), or arrays needing more memory than is free (a zip
bomb, a huge sparse matrix), are refused in one line before anything is allocated. Messages
name the file's own array (``'fts'``); inputs whose rows lie along the last axis (MATLAB's
features x rows, H x W x C x N images) are named as such, not read as examples.
- ``.csv``: the label column is option ``y`` (a name or an index), else a column named
  ``label``, ``y``, ``class`` or ``target`` (any case), else the last one; every other column
  (or those in option ``x``, comma-separated) is a feature and must be numeric. The first row is
  a header when a cell is named like a label column, or a text cell stands above a number.
- a folder: images in ``root/<class>/`` (or ``root/train/<class>/`` and ``root/test/<class>/``);
  the classes are the sub-folder names.

Feature files give float32 tensors ``N x D`` with an unknown input convention
(``inputs=None``). Image arrays become ``N x C x H x W``: ``N x H x W`` gets one channel,
channels-last ``N x H x W x C`` (C in 1, 3, 4 and H over 4) is moved to channels-first, and
8-bit ones are divided by 255 (``InputSpec(0, 1)``, as image folders). ``.npz``/``.mat`` test
arrays are ``x_test``/``y_test`` (or ``X_test``/``Y_test``). Image folders give float32
``N x C x H x W`` in [0, 1] (8-bit pixel / 255, 16-bit / 65535) recorded as
``InputSpec(0, 1)``; ``size`` resizes every image to ``size x size`` (Pillow, bilinear),
``channels`` is 1 (grey, ITU-R 601 luma) or 3 (grey repeated), by default 3 when any image is
colour. Alpha is dropped.

The target of a pair may have no labels (an ``.npz``/``.mat`` without a labels array, a
``.csv`` of exactly the source's feature columns, none named like a label, or a folder of
images without class sub-folders): it becomes an unlabelled dataset (see
``base.unlabelled``) with the source's classes, every row adapted to and none scored.

Labels may be numbers or strings. The classes are the sorted distinct training labels
(numbers numerically, strings lexicographically), or those given (a pair maps the target's
labels with the source's classes); ``Dataset.classes`` keeps them, in class-index order.

The test split (option ``test``): a fraction in (0, 1) holds out ``round(f * n_c)`` rows of each
class (half up; at least 1 and at most ``n_c - 1`` of a class with 2 or more rows; a class with
one row stays in training), drawn with ``seed``; ``"all"`` makes the test split the training
rows (transductive, as shallow domain adaptation benchmarks evaluate); unset, the file's own
test arrays or ``test/`` folder, else 0.2.

``normalize`` steps run in order after the split: ``zscore`` (per feature, mean and standard
deviation of the training split only, a zero deviation left at 1; inputs with more than two
dimensions are standardised per channel), ``l1`` (each row divided by the sum of its absolute
values; an all-zero row stays zero), ``log`` (``log1p``; negative values are refused). A
normalised dataset records ``inputs=None``.

``.npz`` files are read with ``allow_pickle=False``: a pickled object array is refused, never
unpickled. Every problem with a file raises one DataError line naming the file and the fix;
an option that is wrong or does not apply raises ConfigError.

Arrays in memory (``memory.py``: ``from_arrays``) are one more thing to read: read once into
the record a file's arrays are read into (``raw_from_arrays``), then built, split, paired and
predicted as a file is (``Spec``: a path, or :class:`InMemory`).

This module builds the datasets and pairs; the options are checked in ``file_options.py`` and
the files read by ``array_files.py`` (.npz, .mat), ``csv_file.py`` and ``image_folders.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from transferkit.data.array_files import _check_labels, _read_mat, _read_npz, raw_from_arrays
from transferkit.data.base import UNLABELLED, Dataset, DomainPair, Split, unlabelled, with_origin
from transferkit.data.csv_file import _csv_inputs, _read_csv
from transferkit.data.datasets import load_dataset
from transferkit.data.file_options import (
    _KIND_WORDS,
    OPT,
    FileOptions,
    _check_applicable,
    _kind,
    is_data_path,
    parse_file_options,
)
from transferkit.data.file_records import _ALONE, InMemory, _preview, _Raw, _Side
from transferkit.data.image_folders import _read_image_folder, is_junk_path
from transferkit.data.normalize import Normalization
from transferkit.data.normalize import fit as fit_normalization
from transferkit.errors import ConfigError, DataError

DEFAULT_TEST_FRACTION = 0.2


# --- feature files ------------------------------------------------------------------------------


def _read_feature_file(path: Path, kind: str, options: FileOptions,
                       side: _Side = _ALONE) -> _Raw:
    name = str(path)  # as given: a run records it, and a resume reads the same file
    if kind == "csv":
        width = side.source_width if side.labels_optional else None
        x, labels, note, columns, label_column = _read_csv(path, options, width)
        if labels is None:
            return _Raw(name, str(path), path.name, x, None, columns=columns)
        return _Raw(name, str(path), path.name, x, _check_labels(path, note, labels, len(x)),
                    columns=columns, label_column=label_column)
    reader = _read_npz if kind == "npz" else _read_mat
    arrays, unused = reader(path, options, side)  # without "y": an unlabelled target
    return raw_from_arrays(path, arrays, name, path.name, unused)


# --- classes, splits, normalisation -----------------------------------------------------------


def _infer_classes(where: str, labels: np.ndarray) -> tuple[Any, ...]:
    classes = tuple(v.item() for v in np.unique(labels))
    if len(classes) < 2:
        raise DataError(
            f"{where}: the training labels hold one class only ({classes[0]!r}); "
            "classification needs at least 2 classes"
        )
    return classes


# How a description says its test rows are a held-out share (evaluate says it scores those).
HELD_OUT_MARK = "% of each class held out"


def _map_labels(
    where: str, labels: np.ndarray, classes: tuple[Any, ...], classes_from: str, part: str
) -> Tensor:
    index = {c: i for i, c in enumerate(classes)}
    values = labels.tolist()
    y = np.fromiter((index.get(v, -1) for v in values), dtype=np.int64, count=len(values))
    missing = y < 0
    if missing.any():
        unknown = sorted({values[i] for i in np.flatnonzero(missing)}, key=repr)
        hint = ""
        if classes and isinstance(classes[0], str) != isinstance(unknown[0], str):
            words = ("strings", "numbers")
            if not isinstance(unknown[0], str):
                words = words[::-1]
            hint = f" (these labels are {words[0]}, the classes {words[1]})"
        raise DataError(
            f"{where}: {part} label {unknown[0]!r} is not among {classes_from}: "
            f"{_preview(classes)}{hint}; {int(missing.sum())} rows have labels outside them"
        )
    return torch.from_numpy(y)


def _stratified(y: Tensor, num_classes: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train rows, test rows), each in file order; see the module docstring for the rule."""
    labels = y.numpy()
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=num_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in range(num_classes):
        n = int(counts[c])
        if n < 2:
            continue
        k = min(n - 1, max(1, math.floor(fraction * n + 0.5)))
        rows = order[starts[c] : starts[c] + n]
        held.append(rng.permutation(rows)[:k])
    test = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return torch.from_numpy(np.flatnonzero(~is_test)), torch.from_numpy(test)


def _normalize(
    where: str, steps: tuple[str, ...], train: Tensor, test: Tensor | None,
    fitted: Normalization | None = None,
) -> tuple[Tensor, Tensor | None, Normalization]:
    """The steps fitted on the training rows (or ``fitted``: a model's recorded ones) and
    applied to both splits; see :mod:`transferkit.data.normalize`."""
    if fitted is None:
        fitted, train = fit_normalization(where, steps, train)
    else:
        train = fitted.apply(where, train)
    return train, None if test is None else fitted.apply(where, test), fitted


def _build(
    raw: _Raw,
    options: FileOptions,
    classes: Sequence[Any] | None,
    classes_from: str = "the given classes",
    recorded: Normalization | None = None,
) -> Dataset:
    """``recorded``: normalise with a trained model's statistics, not the training rows'."""
    where = raw.where
    if raw.labels is None:
        assert classes is not None  # only a pair's target is read without labels
        return _build_unlabelled(raw, options, tuple(classes))
    if classes is None:
        known = _infer_classes(where, raw.labels)
        classes_from = "the training labels"
    else:
        known = tuple(v.item() if isinstance(v, np.generic) else v for v in classes)
        if not known:
            raise ConfigError("classes must list at least one class label")
        if raw.labels.dtype.kind in "iuf" and bool((raw.labels == -1).all()) and -1 not in known:
            raise DataError(f"{where}: every label is -1, the usual mark of 'no label'; a "
                            "target without labels is a file without a labels array: drop it")
    y = _map_labels(where, raw.labels, known, classes_from, "training")
    x = raw.x
    rows = len(x)
    if options.test == "all":
        split_note = "test = all training rows (transductive)"
        test_x, test_y = None, y
    elif options.test is None and raw.x_test is not None:
        assert raw.labels_test is not None
        split_note = f"test = {raw.own_test}"
        test_x = raw.x_test
        test_y = _map_labels(where, raw.labels_test, known, classes_from, "test")
    else:
        fraction = DEFAULT_TEST_FRACTION if options.test is None else float(options.test)
        train_rows, test_rows = _stratified(y, len(known), fraction, options.seed)
        if len(test_rows) == 0:
            raise DataError(
                f"{where}: every class has one training row, so none can be held out for "
                f"testing; add rows, or set {OPT} test=all to test on the training rows"
            )
        default = "; the default" if options.test is None else ""
        split_note = (
            f"test = {fraction * 100:g}{HELD_OUT_MARK} (stratified, seed "
            f"{options.seed}{default}): {len(train_rows)} train / {len(test_rows)} test"
        )
        x, y, test_x, test_y = x[train_rows], y[train_rows], x[test_rows], y[test_rows]
        if raw.row_names is not None:
            raw.row_names = [raw.row_names[i] for i in train_rows.tolist()]
    if raw.read_note:
        split_note += f"; {raw.read_note}"
    inputs, fitted = raw.inputs, None
    if options.normalize:
        x, test_x, fitted = _normalize(where, options.normalize, x, test_x, recorded)
        inputs = None
        split_note += f"; normalized: {fitted.words}"
    if test_x is None:  # test == "all": the same tensors
        test_x = x
    unit = "images" if raw.image_note else "rows"
    extra = f" (+ {len(raw.x_test)} test {unit})" if raw.x_test is not None else ""
    description = f"{raw.title}: {_rows_words(raw, rows, x, extra)}, {len(known)} classes; " \
        f"{split_note}"
    names = None if raw.row_names is None else tuple(raw.row_names)
    return Dataset(raw.name, Split(x, y), Split(test_x, test_y), len(known), description, inputs,
                   known, row_names=names, normalization=fitted, columns=raw.columns,
                   label_column=raw.label_column, image_read=raw.image_read)


def _build_unlabelled(raw: _Raw, options: FileOptions, classes: tuple[Any, ...],
                      recorded: Normalization | None = None) -> Dataset:
    """A target without training labels: every training row is adapted to (unlabelled); it is
    scored only on the file's own labelled test arrays, if it has them (else on nothing, so
    ``test`` does not apply). ``normalize`` uses the training rows' statistics, or
    ``recorded`` ones (a trained model's, for its predictions)."""
    x, inputs, test_x, fitted = raw.x, raw.inputs, raw.x_test, None
    scored = raw.labels_test is not None and test_x is not None
    notes = ["no training labels: adapted to without them, scored on " + raw.own_test
             if scored else "no labels: adapted to without them, no target accuracy can be "
             "measured"]
    if raw.read_note:
        notes.append(raw.read_note)
    if options.normalize:
        x, test_x, fitted = _normalize(raw.where, options.normalize, x,
                                       test_x if scored else None, recorded)
        inputs = None
        notes.append(f"normalized: {', '.join(fitted.steps)} (the statistics of the model's "
                     "training rows)" if recorded else f"normalized: {fitted.words}")
    known = tuple(v.item() if isinstance(v, np.generic) else v for v in classes)
    what = _rows_words(raw, len(x), x)
    description = f"{raw.title}: {what}; {'; '.join(notes)}"
    names = None if raw.row_names is None else tuple(raw.row_names)
    if not scored:
        return replace(unlabelled(raw.name, x, len(known), inputs=inputs, classes=known,
                                  description=description, row_names=names),
                       normalization=fitted, columns=raw.columns, label_column=raw.label_column,
                       image_read=raw.image_read)
    assert raw.labels_test is not None and test_x is not None
    test_y = _map_labels(raw.where, raw.labels_test, known, "the source's classes", "test")
    train = Split(x, torch.full((len(x),), UNLABELLED, dtype=torch.int64))
    return Dataset(raw.name, train, Split(test_x, test_y), len(known), description, inputs,
                   known, train_labelled=False, row_names=names, normalization=fitted,
                   columns=raw.columns, label_column=raw.label_column, image_read=raw.image_read)


def _rows_words(raw: _Raw, rows: int, x: Tensor, extra: str = "") -> str:
    """``120 images 1x28x28``, ``90 rows x 6 features`` or ``90 rows of inputs 2x3x4``."""
    if raw.image_note:
        return f"{rows} {raw.image_note}{extra}"
    if x.dim() == 2:
        return f"{rows} rows{extra} x {x.shape[1]} features"
    return f"{rows} rows{extra} of inputs {'x'.join(str(d) for d in x.shape[1:])}"


Spec = str | Path | InMemory  # what the loaders read: a file or folder, or arrays in memory


def _locate(spec: Spec) -> tuple[Path | InMemory, str]:
    """What to read and its kind: a path and its format (``_kind``), or arrays in memory."""
    if isinstance(spec, InMemory):
        return spec, "memory"
    path = Path(spec)
    return path, _kind(path)


def _shown(spec: Spec, role: str = "alone") -> str:
    """How messages and names give a path (as given) or arrays in memory (by their name)."""
    return spec.label(role) if isinstance(spec, InMemory) else str(spec)


def _remember(data: Dataset, read: Path | InMemory) -> Dataset:
    """``data`` as built from ``read``: arrays in memory are kept on it (``Dataset.origin``),
    to be built again where a file would be read again."""
    return with_origin(data, read) if isinstance(read, InMemory) else data


def _read(path: Path | InMemory, kind: str, options: FileOptions,
          side: _Side = _ALONE, role: str = "alone") -> _Raw:
    """``side``: read alone or as a pair's source or target (which may have no labels);
    ``role``: the pair's side, by which arrays in memory without a name are named."""
    if isinstance(path, InMemory):  # read and checked when given: a copy, named for its role
        return path.read(role)
    if kind == "images":
        return _read_image_folder(path, options, side)
    return _read_feature_file(path, kind, options, side)


def load_file_dataset(
    spec: Spec,
    options: FileOptions = FileOptions(),
    classes: Sequence[Any] | None = None,
    unlabelled_classes: Callable[[Tensor], int | Sequence[Any]] | None = None,
    width: int | None = None,
    recorded: Normalization | None = None,
    indexed: bool = False,
    shape: tuple[int, ...] | None = None,
) -> Dataset:
    """A Dataset read from a ``.npz``, ``.mat`` or ``.csv`` file or an image folder (or from
    arrays in memory, read as an ``.npz`` holding them).

    ``classes`` (original label values in class-index order) fixes the class indices; a label
    not among them raises DataError. ``Dataset.classes`` records the classes used.
    ``unlabelled_classes`` (source-free adaptation: a target file may have no labels) gives
    the class count of a file without labels from its inputs (the trained model's outputs),
    or the model's class names (its labelled test rows map by them); without it, a file
    without labels is refused. ``width``: the trained model's feature count, by which a CSV
    without a label column is told from one with. ``recorded``: a
    trained model's normalisation, applied with its statistics (``evaluate``, as ``predict``).
    ``indexed``: the model that reads the file names no classes, so its classes are the
    indices ``0..K-1`` (``K`` from ``unlabelled_classes``): whole-number labels in that range
    are those indices, even when the file holds only some classes (a field sample).
    ``shape``: the trained model's input shape; rows of another are refused in one line, as
    ``predict`` refuses them, not met with an error from inside the model.
    """
    options = parse_file_options(options)
    if recorded is not None:
        options = replace(options, normalize=recorded.steps)
    path, kind = _locate(spec)
    _check_applicable(options, {kind}, f"{_shown(path)} ({_KIND_WORDS[kind]})")
    side = _ALONE if unlabelled_classes is None else _Side("target", width)
    raw = _read(path, kind, options, side)
    if shape is not None:  # a trained model's input shape: said before the model is run
        _check_input_shape(raw, kind, tuple(shape))
    if raw.labels is None:
        assert unlabelled_classes is not None
        found = unlabelled_classes(raw.x) if classes is None else classes  # a count or names
        known = range(found) if isinstance(found, int) else found
        return _remember(_build_unlabelled(raw, options, tuple(known), recorded), path)
    if classes is None and indexed and unlabelled_classes is not None:
        count = unlabelled_classes(raw.x)
        count = count if isinstance(count, int) else len(count)
        if _indices_below(raw.labels, count):
            classes = tuple(range(count))
        else:
            _refuse_other_indices(raw.where, raw.labels, count)
    return _remember(_build(raw, options, classes, recorded=recorded), path)


def _refuse_other_indices(path: Path | str, labels: np.ndarray, count: int) -> None:
    """A model without class names has the classes ``0..count-1``; labels outside them were
    once re-indexed in sorted order (labels 1, 2 or ``ant``, ``bee`` scored as classes 0, 1),
    a silent guess that scores the wrong classes when the file counts from 1, holds other
    classes or names them."""
    indices = f"its classes are the indices 0..{count - 1}"
    fix = "relabel the file with those indices (from 0), or evaluate a model trained on these " \
        "labels"
    if labels.dtype.kind not in "iuf":
        names = sorted({str(v) for v in labels.tolist()})
        raise DataError(f"{path}: labels are names ({_preview(names)}) but the model records "
                        f"no class names, so none can be matched: {indices}; {fix}")
    values = sorted(set(labels.tolist()))
    outside = [v for v in values if not (float(v).is_integer() and 0 <= v < count)]
    raise DataError(
        f"{path}: label {outside[0]:g} is not a class of the model, which records no class "
        f"names: {indices} (the file's labels run from {values[0]:g} to {values[-1]:g}); {fix}"
    )


def _indices_below(labels: np.ndarray, count: int) -> bool:
    """Every label a whole number in ``[0, count)`` (not a bool, not a string)."""
    values = labels.tolist()
    return all(isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
               and 0 <= v < count for v in values)


def load_rows_to_predict(spec: Spec, options: FileOptions,
                         classes_of: Callable[[Tensor], Sequence[Any]],
                         width: int | None = None,
                         recorded: Normalization | None = None, *,
                         shape: tuple[int, ...] | None = None,
                         columns: Sequence[str] | None = None,
                         label_column: str | None = None) -> Dataset:
    """Every row of a data file or image folder, labels never read, for predictions: ``x``
    then ``x_test`` (an image folder's ``train/`` then ``test/``), in file order, as an
    unlabelled dataset of the model's classes (``classes_of(x)``: its recorded names, else its
    class indices). Its rows are named by image path, else by index (``x_test`` rows as
    ``x_test:i``). ``shape`` (else ``(width,)``): the model's input shape, by which a CSV
    without a label column is told from one with, and which the rows must have (refused in one
    line before the model sees them). A CSV's label column is left out unread; ``test`` does
    not apply. ``recorded``: the model's normalisation, fitted on its training rows, applied
    with its own statistics (not these rows').

    ``columns`` and ``label_column`` (the model's training column names, in feature order, and
    its label column; ``Dataset.columns``/``label_column`` of its training data): a CSV with a
    header has its columns matched by name, not position. The columns are taken in training
    order (reordered when the header has them in another); a column named ``label_column``,
    and any named like a label that the model did not train on, is left out unread; a training
    column the file lacks, or a column that is neither a training column nor a label, is
    refused in one line. Options ``x``/``y`` still choose the columns; a CSV without a header,
    or ``columns`` None, is read by position."""
    options = parse_file_options(options)
    if recorded is not None:
        recorded.refuse_other_steps(options.normalize, "data option normalize", "predict")
        options = replace(options, normalize=recorded.steps)
    if options.test is not None:
        raise ConfigError(f"data option test={options.test}: predict reads every row of "
                          f"{_shown(spec)}; remove it")
    path, kind = _locate(spec)
    _check_applicable(options, {kind}, f"{_shown(path)} ({_KIND_WORDS[kind]})")
    if shape is None and width is not None:
        shape = (width,)
    if isinstance(columns, str):
        raise ConfigError(f"columns must be a sequence of column names, got the string "
                          f"{columns!r}")
    raw = _read_inputs(path, kind, options, None if shape is None else tuple(shape),
                       None if columns is None else tuple(columns), label_column)
    if shape is not None:
        _check_input_shape(raw, kind, tuple(shape))
    return _remember(_build_unlabelled(raw, options, tuple(classes_of(raw.x)), recorded), path)


def _read_inputs(path: Path | InMemory, kind: str, options: FileOptions,
                 shape: tuple[int, ...] | None, trained: Sequence[str] | None = None,
                 trained_label: str | None = None) -> _Raw:
    """Every input row of a file or folder (``x`` then ``x_test``), labels never read; rows
    named by image path, else by index (``x_test:i``). ``trained``/``trained_label``: the
    model's training column names and label column (a CSV's columns are matched by name)."""
    if isinstance(path, InMemory):  # the labels given are left out below, unread
        raw = path.read("predict")
    elif kind == "csv":
        name = str(path)
        x, columns, left_out, label_column = _csv_inputs(path, options, shape, trained,
                                                         trained_label)
        raw = _Raw(name, name, path.name, x, None, columns=columns, read_note=left_out,
                   label_column=label_column)
    elif kind == "images":
        raw = _read_image_folder(path, options, _Side("target"))
    else:
        reader = _read_npz if kind == "npz" else _read_mat
        arrays, _ = reader(path, options, _Side("predict"))  # x and x_test, never labels
        raw = raw_from_arrays(path, arrays, str(path), path.name)
    names = raw.row_names or [str(i) for i in range(len(raw.x))]
    if raw.x_test is not None:
        extra = raw.test_row_names or [f"x_test:{i}" for i in range(len(raw.x_test))]
        raw.x, names = torch.cat([raw.x, raw.x_test]), [*names, *extra]
    raw.labels, raw.labels_test, raw.x_test, raw.row_names = None, None, None, names
    raw.read_note = raw.read_note if kind == "csv" else ""
    return raw


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _check_input_shape(raw: _Raw, kind: str, shape: tuple[int, ...]) -> None:
    """Rows of the model's input ``shape``, else one line naming both shapes and the fix."""
    got = tuple(raw.x.shape[1:])
    if got == shape:
        return
    flat = len(shape) == 1
    takes = f"{shape[0]} features" if flat else f"inputs {_dims(shape)}"
    as_arrays = f"give an .npz of N x {_dims(shape)} arrays or a folder of images"
    if kind == "csv":
        count = int(np.prod(got))
        fix = "give the feature columns it was trained on" if flat else as_arrays
        left_out = f" ({raw.read_note})" if raw.read_note else ""
        raise DataError(f"{raw.where} has {count} feature column{'s' * (count != 1)}{left_out}, "
                        f"the model takes {takes}; {fix}")
    if kind == "images":
        if flat:
            fix = f"give a .csv or .npz of {shape[0]} features per row"
        elif len(shape) != 3:
            fix = as_arrays
        else:
            fixes: list[str | None] = []
            if got[0] != shape[0]:
                fixes.append(f"{OPT} channels={shape[0]}" if shape[0] in (1, 3) else None)
            if got[1:] != shape[1:]:
                fixes.append(f"{OPT} size={shape[1]}" if shape[1] == shape[2] else None)
            fix = as_arrays if None in fixes else f"pass {' '.join(map(str, fixes))}"
        raise DataError(f"{raw.where}: images {_dims(got)}, the model takes {takes}: {fix}")
    what = f"rows of {got[0]} features" if len(got) == 1 else f"inputs {_dims(got)}"
    fix = f"give N x {shape[0]} arrays" if flat else f"give arrays of N x {_dims(shape)}"
    raise DataError(f"{raw.where}: {what}, the model takes {takes}; {fix}")


# --- pairs ------------------------------------------------------------------------------------


def _registered(
    name: str,
    options: FileOptions,
    classes: tuple[Any, ...] | None,
    classes_from: str,
    data_dir: str | Path | None,
    download: bool,
    check_shape: Callable[[tuple[int, ...]], None] | None = None,
) -> Dataset:
    """A registered dataset as one side of a file pair: its own splits; ``normalize`` applies,
    and a target's labels (class indices) are mapped with the source's classes."""
    data = load_dataset(name, data_dir, download)
    if check_shape is not None:
        check_shape(data.input_shape)
    changes: dict[str, Any] = {}
    if classes is not None:
        for part in ("train", "test"):
            split = getattr(data, part)
            y = _map_labels(name, split.y.numpy(), classes, classes_from, f"{part} split")
            changes[part] = Split(split.x, y)
        changes["num_classes"], changes["classes"] = len(classes), classes
    if options.normalize:
        train = changes.get("train", data.train)
        test = changes.get("test", data.test)
        train_x, test_x, fitted = _normalize(name, options.normalize, train.x, test.x)
        changes["train"], changes["test"] = Split(train_x, train.y), Split(test_x, test.y)
        changes["inputs"], changes["normalization"] = None, fitted
        note = f"normalized: {fitted.words}"
        changes["description"] = f"{data.description}; {note}"
    return replace(data, **changes) if changes else data


def _shape_words(shape: tuple[int, ...], other: tuple[int, ...] | None = None) -> str:
    """``features 800`` or ``inputs 3x32x32``; the word is left out when ``other``'s is the same."""
    flat = len(shape) == 1
    word, size = ("features", str(shape[0])) if flat else ("inputs", "x".join(map(str, shape)))
    return size if other is not None and (len(other) == 1) == flat else f"{word} {size}"


def load_file_pair(
    source: Spec,
    target: Spec,
    options: FileOptions = FileOptions(),
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> DomainPair:
    """A DomainPair whose sides are data files (or registered dataset names, or arrays in
    memory, each read with the options given with it).

    The target's labels are mapped with the source's classes (a registered dataset's classes
    are its indices 0..K-1); each side is split and normalised on its own (statistics of its own
    training split). ``data_dir`` and ``download`` apply to a registered side.
    """
    options = parse_file_options(options)
    sides = {"source": source, "target": target}
    kinds = {role: _locate(s)[1] for role, s in sides.items()
             if isinstance(s, InMemory) or is_data_path(str(s))}
    if not kinds:
        raise ConfigError(
            f"neither {source!r} nor {target!r} is a data file; name a registered pair with "
            "load_pair instead"
        )
    what = " and ".join(f"{_shown(sides[r], r)} ({_KIND_WORDS[k]})" for r, k in kinds.items())
    _check_applicable(options, set(kinds.values()), what)

    def options_of(spec: Spec) -> FileOptions:  # arrays in memory: those given with them
        return parse_file_options(spec.options) if isinstance(spec, InMemory) else options

    src_columns = None
    if "source" in kinds:
        read, kind = _locate(source)
        src_raw = _read(read, kind, options_of(source), _Side("source"), "source")
        if src_raw.labels is None:  # arrays without y (a file without labels is refused read)
            raise DataError(f"{src_raw.where}: the source has no labels (y=None); adaptation "
                            "learns the task from labelled source rows: give its y")
        src = _remember(_build(src_raw, options_of(source), None), read)
        src_columns = src_raw.columns
    else:
        src = _registered(str(source), options, None, "", data_dir, download)
    classes = src.classes if src.classes is not None else tuple(range(src.num_classes))
    source_name, target_name = _shown(source, "source"), _shown(target, "target")
    src_name = Path(source_name).name
    name = f"{source_name}->{target_name}"  # as given: a run records it, and a resume reads it

    def check_shape(shape: tuple[int, ...]) -> None:  # before labels: the likelier mistake
        if src.input_shape != shape:
            raise DataError(
                f"pair {name}: source {_shape_words(src.input_shape)} vs target "
                f"{_shape_words(shape, src.input_shape)} ({source_name} vs {target_name}); "
                "both domains need the same input shape"
            )

    classes_from = f"the source's classes ({src_name})"
    if "target" in kinds:
        width = src.input_shape[0] if len(src.input_shape) == 1 else None
        try:
            read, kind = _locate(target)
            raw = _read(read, kind, options_of(target), _Side("target", width), "target")
            check_shape(tuple(raw.x.shape[1:]))
            _align_columns(raw, src_columns, target_name)
            tgt = _remember(_build(raw, options_of(target), classes, classes_from), read)
        except DataError as exc:
            if kinds["target"] != "csv" or width is None or "label" not in str(exc):
                raise
            raise DataError(f"{exc} (a target CSV without labels has exactly the source's "
                            f"{width} feature columns, none named like a label)") from None
    else:
        tgt = _registered(str(target), options, classes, classes_from, data_dir, download,
                          check_shape)
    return DomainPair(name, src, tgt)


def _align_columns(raw: _Raw, names: tuple[str, ...] | None, target: str) -> None:
    """Put a CSV target's feature columns in the source's order when both headers name the
    same columns in another order (matched by position they would mix features silently,
    and nothing shows it on a target without labels)."""
    if names is None or raw.columns is None or raw.columns == names:
        return
    if sorted(raw.columns) != sorted(names) or len(set(names)) != len(names):
        return  # other names: the columns are matched by position, as given
    order = [raw.columns.index(n) for n in names]
    raw.x = raw.x[:, order].contiguous()
    raw.columns = names
    raw.read_note = "; ".join(filter(None, [raw.read_note, f"{target}'s columns put in "
                                              "the source's order by their header names"]))


def data_digest(spec: str) -> dict[str, str]:
    """``{path: sha256}`` of each data file in ``spec`` (``a->b``: both sides), so a run can
    notice at a resume that a file changed; an image folder's digest covers its files' names
    and sizes, junk the reader skips (.DS_Store, Thumbs.db, __MACOSX) left out. Registered
    names are left out."""
    import hashlib

    digests: dict[str, str] = {}
    for side in spec.split("->"):
        if not is_data_path(side):
            continue
        path, digest = Path(side), hashlib.sha256()
        if path.is_dir():
            for item in sorted(p for p in path.rglob("*")
                               if p.is_file() and not is_junk_path(p.relative_to(path))):
                digest.update(f"{item.relative_to(path)}\0{item.stat().st_size}\n".encode())
        else:
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        digests[side] = digest.hexdigest()
    return digests
