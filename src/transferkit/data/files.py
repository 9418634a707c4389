"""Your own data from files: ``.npz``, ``.mat``, ``.csv`` or a folder of images.

``load_file_dataset(path, options)`` returns a :class:`Dataset` and ``load_file_pair(source,
target, options)`` a :class:`DomainPair` (either side may also be a registered dataset name).

- ``.npz``: inputs from the first array of ``x X inputs features fts data`` (or option ``x``),
  labels from ``y Y labels label targets`` (or option ``y``).
- ``.mat`` (MATLAB v5/v7; v7.3 is HDF5 and refused): the same names; labels ``N x 1`` or
  ``1 x N`` are flattened.
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
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from transferkit.data.base import UNLABELLED, Dataset, DomainPair, Split, unlabelled
from transferkit.data.datasets import DATASETS, load_dataset
from transferkit.data.inputs import InputSpec
from transferkit.data.normalize import STEPS as NORMALIZE_STEPS
from transferkit.data.normalize import Normalization
from transferkit.data.normalize import fit as fit_normalization
from transferkit.errors import ConfigError, DataError

FEATURE_SUFFIXES = (".npz", ".mat", ".csv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DEFAULT_TEST_FRACTION = 0.2
X_KEYS = ("x", "X", "inputs", "features", "fts", "data")
Y_KEYS = ("y", "Y", "labels", "label", "targets")
X_TEST_KEYS = ("x_test", "X_test")
Y_TEST_KEYS = ("y_test", "Y_test")
CSV_LABEL_NAMES = ("label", "y", "class", "target")
OPT = "--data-opt"  # how messages tell the user to set an option
UNIT = InputSpec(mean=0.0, std=1.0)  # image folders: pixels in [0, 1]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_KEY_DEFAULTS = {"x": X_KEYS, "y": Y_KEYS, "x_test": X_TEST_KEYS, "y_test": Y_TEST_KEYS}
# Which formats each format-specific option applies to, and how to say so.
_APPLIES = {
    "x": ({"npz", "mat", "csv"}, ".npz/.mat arrays and .csv columns"),
    "y": ({"npz", "mat", "csv"}, ".npz/.mat arrays and .csv columns"),
    "x_test": ({"npz", "mat"}, ".npz and .mat files"),
    "y_test": ({"npz", "mat"}, ".npz and .mat files"),
    "size": ({"images"}, "image folders"),
    "channels": ({"images"}, "image folders"),
}
_KIND_WORDS = {"npz": "an .npz file", "mat": "a .mat file", "csv": "a CSV file",
               "images": "an image folder"}


# --- options ----------------------------------------------------------------------------------


def _bad(name: str, value: Any, want: str, example: str) -> ConfigError:
    return ConfigError(
        f"data option {name} must be {want}, got {value!r}; e.g. {OPT} {name}={example}"
    )


def _name_option(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad(name, value, "an array or column name", "NAME")
    if isinstance(value, numbers.Integral):
        return str(int(value))  # a CSV column index read as a number
    if name == "x" and isinstance(value, list | tuple) and value:
        return ",".join(str(_name_option(name, v)) for v in value)  # several CSV columns
    if not isinstance(value, str) or not value.strip():
        raise _bad(name, value, "an array or column name", "NAME")
    return value.strip()


MAX_IMAGE_SIDE = 4096  # as --teacher-input size: larger allocates gigabytes per batch


def _int_option(name: str, value: Any, minimum: int) -> int:
    number: int | None = None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or number < minimum:
        raise _bad(name, value, f"an integer >= {minimum}", str(max(minimum, 1)))
    return number


def _test_option(value: Any) -> float | str | None:
    want = "a fraction in (0, 1), or 'all' (test on the training rows)"
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return "all"
        try:
            number = float(text)
        except ValueError:
            raise _bad("test", value, want, "0.2") from None
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    if number is None or not math.isfinite(number) or not 0.0 < number < 1.0:
        raise _bad("test", value, want, "0.2")
    return number


def _normalize_option(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise _bad("normalize", value, "a list of steps", "log,zscore")
    steps: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise _bad("normalize", value, "a list of steps", "log,zscore")
        step = item.strip().lower()
        if not step:
            continue
        if step not in NORMALIZE_STEPS:
            raise ConfigError(
                f"data option normalize: unknown step {item.strip()!r}; steps: "
                f"{', '.join(NORMALIZE_STEPS)}, applied in order (e.g. normalize=log,zscore)"
            )
        if step in steps:
            raise ConfigError(f"data option normalize: step {step!r} is given twice; give it once")
        steps.append(step)
    return tuple(steps)


@dataclass(frozen=True)
class FileOptions:
    """How to read a data file; see the module docstring. Values are checked and normalised
    (numbers given as text are read, ``normalize`` may be ``"log,zscore"`` or a list)."""

    x: str | None = None
    y: str | None = None
    x_test: str | None = None
    y_test: str | None = None
    test: float | str | None = None
    seed: int = 0
    size: int | None = None
    channels: int | None = None
    normalize: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("x", "y", "x_test", "y_test"):
            object.__setattr__(self, name, _name_option(name, getattr(self, name)))
        object.__setattr__(self, "test", _test_option(self.test))
        object.__setattr__(self, "seed", _int_option("seed", self.seed, 0))
        if self.size is not None:
            size = _int_option("size", self.size, 1)
            if size > MAX_IMAGE_SIDE:
                raise _bad("size", self.size, f"an integer from 1 to {MAX_IMAGE_SIDE} (a larger "
                           "side is a typo: 5000 makes 25M inputs per image)", "224")
            object.__setattr__(self, "size", size)
        if self.channels is not None:
            channels = _int_option("channels", self.channels, 1)
            if channels not in (1, 3):
                raise _bad("channels", self.channels, "1 (grey) or 3 (RGB)", "3")
            object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "normalize", _normalize_option(self.normalize))
        given = [n for n in ("x_test", "y_test") if getattr(self, n) is not None]
        if given and self.test is not None:
            raise ConfigError(
                f"data options {given[0]} and test={self.test} both choose the test split: "
                f"{given[0]} names the file's test arrays, test splits the training rows; set one"
            )


FILE_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(FileOptions))


def parse_file_options(options: Mapping[str, Any] | None) -> FileOptions:
    """FileOptions from a dict such as ``{"x": "fts", "test": 0.2, "normalize": "log,zscore"}``.

    An unknown key or a bad value raises ConfigError naming it and the fix.
    """
    if options is None:
        return FileOptions()
    if isinstance(options, FileOptions):
        return options
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"data options must be a mapping of option names to values, got "
            f"{type(options).__name__}; valid options: {', '.join(FILE_OPTIONS)}"
        )
    unknown = sorted(str(k) for k in options if k not in FILE_OPTIONS)
    if unknown:
        raise ConfigError(
            f"unknown data option {unknown[0]!r}; valid options: {', '.join(FILE_OPTIONS)}"
        )
    return FileOptions(**{str(k): v for k, v in options.items()})


def is_data_path(spec: str) -> bool:
    """True for an existing folder, any name ending in .npz, .mat or .csv, or any name with a
    path separator (existing or not, so that a missing file or folder gets a clear error, not
    "unknown dataset"). A folder that has the name of a registered dataset (e.g. ``mnist`` in
    the working directory) is not taken for data: write ``./mnist``.
    """
    text = str(spec)
    if text.lower().endswith(FEATURE_SUFFIXES):
        return True
    if text in DATASETS:
        return False
    return "/" in text or os.sep in text or Path(text).is_dir()


def _check_applicable(options: FileOptions, kinds: set[str], what: str) -> None:
    for name, (formats, words) in _APPLIES.items():
        if getattr(options, name) is not None and not kinds & formats:
            raise ConfigError(f"data option {name} applies to {words}, not to {what}; remove it")


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in FEATURE_SUFFIXES:
        if not path.is_file():
            why = "is a folder" if path.is_dir() else "does not exist"
            raise DataError(f"data file {path} {why}; give the path of a {suffix} file")
        return suffix[1:]
    if path.is_dir():
        return "images"
    if path.exists():
        raise DataError(
            f"data file {path} has an unknown format; give a .npz, .mat or .csv file or a folder "
            "of images with one sub-folder per class"
        )
    raise DataError(f"data path {path} does not exist")


# --- raw arrays ---------------------------------------------------------------------------------


@dataclass
class _Raw:
    """What a reader found: inputs and labels as stored, before classes and splits."""

    name: str
    where: str  # the file or folder, for messages
    title: str  # its name, for the description
    x: Tensor
    labels: np.ndarray | None  # None: an unlabelled adaptation target
    x_test: Tensor | None = None
    labels_test: np.ndarray | None = None
    own_test: str = ""  # how to describe the file's own test split
    read_note: str = ""  # what reading left out or changed (unused test arrays, column order)
    image_note: str = ""  # image folders: "images 3x32x32" and resizing
    inputs: InputSpec | None = None
    columns: tuple[str, ...] | None = None  # a CSV's feature column names (its header)
    label_column: str | None = None  # the header name of a CSV's label column
    row_names: list[str] | None = None  # an image folder's training files, in row order
    test_row_names: list[str] | None = None  # and its test/ files


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@dataclass(frozen=True)
class _Side:
    """How a file is read: alone, or as a pair's source or target. Only a target may have no
    labels; a CSV target is recognised as unlabelled by the source's feature count."""

    role: str = "alone"  # "alone", "source", "target" or "predict" (inputs only)
    source_width: int | None = None  # a pair's flat source: its feature count

    @property
    def labels_optional(self) -> bool:
        return self.role == "target"


_ALONE = _Side()
# A lone file without labels could be an adaptation target: said where that helps.
_TARGET_HINT = " (inputs without labels are an adaptation target: adapt --data SOURCE->{path})"


def _pick_keys(
    path: Path, names: Sequence[str], options: FileOptions, side: _Side = _ALONE
) -> tuple[dict[str, str | None], str]:
    """Which arrays hold x, y and the test split; the second item names unused arrays.

    A pair's target (``side``) may have no labels: then ``y`` is None and it has no test split;
    an explicit ``y`` option it lacks makes it unlabelled too (the option serves the source),
    and the note names the arrays left unread, so a labels array of another name is seen.
    Rows read for predictions (role ``predict``) read ``x`` and ``x_test`` only."""
    present = ", ".join(repr(n) for n in names) or "none"
    if side.role == "predict":
        return _input_keys(path, names, options, present), ""

    def pick(option: str, required: bool) -> str | None:
        explicit = getattr(options, option)
        if explicit is not None:
            if explicit in names:
                return explicit
            if option == "y" and side.labels_optional:
                return None
            raise DataError(
                f"{path}: no array {explicit!r} (option {option}); arrays present: {present}; "
                f"set {OPT} {option}=NAME"
            )
        found = next((k for k in _KEY_DEFAULTS[option] if k in names), None)
        if found is None and required:
            looked = ", ".join(_KEY_DEFAULTS[option])
            what = "inputs" if option == "x" else "labels"
            hint = _TARGET_HINT.format(path=path) if option == "y" and side.role == "alone" \
                else ""
            raise DataError(
                f"{path}: no {what} array (looked for {looked}); arrays present: {present}; "
                f"set {OPT} {option}=NAME{hint}"
            )
        return found

    keys = {"x": pick("x", True), "y": pick("y", not side.labels_optional), "x_test": None,
            "y_test": None}
    x_test, y_test = pick("x_test", False), pick("y_test", False)
    if keys["y"] is None:  # unlabelled training rows: all there is to adapt to
        if options.test is None and x_test is not None and y_test is not None:
            keys["x_test"], keys["y_test"] = x_test, y_test  # scored on its labelled test rows
            return keys, ""
        if options.test is None and y_test is not None:
            raise DataError(
                f"{path}: has test labels ({y_test!r}) but no test inputs (x_test) and no "
                f"training labels; arrays present: {present}; set {OPT} x_test=NAME"
            )
        others = [n for n in names if n != keys["x"]]
        unread = f"arrays not read: {', '.join(map(repr, others))} (set {OPT} y=NAME if " \
            "one holds labels)" if others else ""
        return keys, unread
    if options.test is not None:
        unused = "/".join(k for k in (x_test, y_test) if k)
        return keys, f"the file's {unused} not used" if unused else ""
    if (x_test is None) != (y_test is None):
        have, lack = ("x_test", "y_test") if y_test is None else ("y_test", "x_test")
        raise DataError(
            f"{path}: has test array {x_test or y_test!r} but no {lack} array; arrays present: "
            f"{present}; set {OPT} {lack}=NAME, or {OPT} test=0.2 to split the training rows "
            f"instead ({have} is then unused)"
        )
    keys["x_test"], keys["y_test"] = x_test, y_test
    return keys, ""


def _input_keys(path: Path, names: Sequence[str], options: FileOptions,
                present: str) -> dict[str, str | None]:
    """The arrays of inputs (``x``, required) and test inputs (``x_test``, when present) that
    predictions read; label arrays are never named, so never read."""
    keys: dict[str, str | None] = {}
    for option, required in (("x", True), ("x_test", False)):
        explicit = getattr(options, option)
        if explicit is not None and explicit not in names:
            raise DataError(
                f"{path}: no array {explicit!r} (option {option}); arrays present: {present}; "
                f"set {OPT} {option}=NAME"
            )
        found = explicit or next((k for k in _KEY_DEFAULTS[option] if k in names), None)
        if found is None and required:
            raise DataError(
                f"{path}: no inputs array (looked for {', '.join(X_KEYS)}); arrays present: "
                f"{present}; set {OPT} x=NAME"
            )
        keys[option] = None if option == "x_test" and found == keys["x"] else found
    return keys


def _read_npz(path: Path, options: FileOptions,
              side: _Side = _ALONE) -> tuple[dict[str, np.ndarray], str]:
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(b"\x93NUMPY"):
        raise DataError(
            f"{path} holds a single .npy array, not an .npz archive; save inputs and labels "
            "together with np.savez(path, x=x, y=y)"
        )
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise DataError(
            f"{path} is not an .npz archive (no zip header); save it with np.savez(path, x=x, y=y)"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: cannot read the .npz archive ({_first_line(exc)}); save it again "
            "with np.savez"
        ) from None
    with archive:
        keys, unused = _pick_keys(path, list(archive.files), options, side)
        arrays: dict[str, np.ndarray] = {}
        for role, key in keys.items():
            if key is None:
                continue
            try:
                arrays[role] = archive[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc) or "pickled" in str(exc):
                    raise DataError(
                        f"{path}: array {key!r} is a pickled object array; transferkit does not "
                        "unpickle data (it could run code): save numeric or string arrays"
                    ) from None
                raise DataError(f"{path}: cannot read array {key!r} ({_first_line(exc)})") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise DataError(
                    f"{path}: cannot read array {key!r} ({_first_line(exc)}); the file may be "
                    "truncated: save it again"
                ) from None
    return arrays, unused


def _read_mat(path: Path, options: FileOptions,
              side: _Side = _ALONE) -> tuple[dict[str, np.ndarray], str]:
    v73 = (
        f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read; save it with -v7 "
        "(save(file, 'fts', 'labels', '-v7')) or as .npz"
    )
    with path.open("rb") as f:
        head = f.read(520)
    if head.startswith(_HDF5_MAGIC) or head[512:520] == _HDF5_MAGIC or b"MATLAB 7.3" in head[:128]:
        raise DataError(v73)
    from scipy.io import loadmat  # slow import: only here

    try:
        contents = loadmat(str(path))
    except NotImplementedError:
        raise DataError(v73) from None
    except Exception as exc:  # scipy raises many types for a damaged or foreign file
        raise DataError(
            f"{path}: cannot read as a MATLAB file ({_first_line(exc)}); save it with -v7 "
            "or as .npz"
        ) from None
    names = [k for k in contents if not k.startswith("__")]
    keys, unused = _pick_keys(path, names, options, side)
    arrays = {}
    for role, key in keys.items():
        if key is not None:
            value = contents[key]
            arrays[role] = value.toarray() if hasattr(value, "toarray") else value  # sparse
    return arrays, unused


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_column(path: Path, spec: str, option: str, header: list[str] | None, width: int) -> int:
    if header is not None and spec in header:
        return header.index(spec)
    try:
        index = int(spec)
    except ValueError:
        index = None
    if index is not None and -width <= index < width:
        return index % width
    names = f"columns: {', '.join(header)}" if header else "the file has no header row"
    raise DataError(
        f"{path}: no column {spec!r} (option {option}); {names}; set {OPT} {option}=NAME or a "
        f"column index 0..{width - 1}"
    )


def _csv_numbers(path: Path, rows: list[tuple[int, list[str]]], columns: list[int],
                 header: list[str] | None) -> np.ndarray:
    """The feature columns as float64; a cell that is not a number is named by line and
    column."""
    cells = [[row[j] for j in columns] for _, row in rows]
    try:
        return np.array(cells, dtype=np.float64).reshape(len(rows), len(columns))
    except ValueError:  # find the cell, then parse as Python does
        for (line, _), values in zip(rows, cells, strict=True):
            for j, cell in zip(columns, values, strict=True):
                if not _is_number(cell):
                    column = f"{header[j]!r}" if header is not None else f"index {j}"
                    raise DataError(
                        f"{path}, line {line}, column {column}: {cell!r} is not a number; "
                        "feature columns must be numeric"
                    ) from None
        return np.array([[float(c) for c in values] for values in cells], dtype=np.float64)


def _csv_table(path: Path, names: Sequence[str] | None = None
               ) -> tuple[list[tuple[int, list[str]]], list[str] | None, int]:
    """(rows as (line, cells), the header or None, the column count) of a CSV file, every
    row checked to have as many cells as the header (or the first row). ``names``: a header
    a trained model expects; a first row holding them all is that header, numbers or not."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save the CSV as UTF-8") from None
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = ","
    if "," not in first_line:
        delimiter = next((d for d in (";", "\t") if d in first_line), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((reader.line_num, [cell.strip() for cell in row]))
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: {exc}") from None
    if not rows:
        raise DataError(f"{path} is empty; give one row per example and a label column")
    first = rows[0][1]
    header: list[str] | None = None
    if names and len(rows) > 1 and set(names) <= set(first):
        header, rows = first, rows[1:]
    elif not all(_is_number(c) for c in first):
        named = any(c.lower() in CSV_LABEL_NAMES for c in first)
        second = rows[1][1] if len(rows) > 1 else []
        switches = any(
            a and not _is_number(a) and _is_number(b)
            for a, b in zip(first, second, strict=False)
        )
        if named or switches or len(rows) == 1:
            header = first
            rows = rows[1:]
    if not rows:
        raise DataError(f"{path} has a header row but no data rows")
    width = len(header) if header is not None else len(rows[0][1])
    for line, row in rows:
        if len(row) != width:
            raise DataError(
                f"{path}, line {line}: {len(row)} cells, but the "
                f"{'header' if header is not None else 'first row'} has {width}; give every row "
                "the same columns"
            )
    return rows, header, width


def _read_csv(
    path: Path, options: FileOptions, unlabelled_width: int | None = None
) -> tuple[Tensor, np.ndarray | None, str, tuple[str, ...] | None, str | None]:
    """(x, labels, label note, feature column names, label column name) from a CSV file
    (names None without a header); see the module docstring for the rules.

    ``unlabelled_width`` (a pair's target: the source's feature count): a file of exactly that
    many columns, none named like a label and no ``x``/``y`` option, has no label column
    (labels None); one more column is a label column as usual."""
    rows, header, width = _csv_table(path)
    lowered = [c.lower() for c in header] if header is not None else []
    if (unlabelled_width == width and options.x is None and options.y is None
            and not any(n in lowered for n in CSV_LABEL_NAMES)):
        x = _csv_numbers(path, rows, list(range(width)), header)
        return (_features(path, "x", x), None, "no label column", _names(header, range(width)),
                None)
    if width < 2:
        raise DataError(f"{path} has {width} column; give feature columns and a label column")
    if options.y is not None:
        label = _csv_column(path, options.y, "y", header, width)
    else:
        label = next(
            (lowered.index(n) for n in CSV_LABEL_NAMES if n in lowered), width - 1
        )
    if options.x is not None:
        columns = [_csv_column(path, s.strip(), "x", header, width) for s in options.x.split(",")]
        if label in columns:
            raise ConfigError(f"data option x includes the label column of {path}; remove it")
    else:
        columns = [j for j in range(width) if j != label]
    x = _csv_numbers(path, rows, columns, header)
    labels_text = [row[label] for _, row in rows]
    for (line, _), cell in zip(rows, labels_text, strict=True):
        if not cell:
            raise DataError(f"{path}, line {line}: the label cell is empty; give every row a label")
    labels: np.ndarray
    if all(_is_number(c) for c in labels_text):
        labels = np.array([float(c) for c in labels_text], dtype=np.float64)
    else:
        labels = np.array(labels_text, dtype=str)
    name = header[label] if header is not None else f"column {label}"
    return (_features(path, "x", x), labels, f"label column {name!r}", _names(header, columns),
            None if header is None else header[label])


def _csv_label_index(header: list[str] | None, spec: str, width: int) -> int | None:
    """The column option ``y`` names (a header name or an index), None when the file has none
    such (a file without labels)."""
    if header is not None and spec in header:
        return header.index(spec)
    try:
        index = int(spec)
    except ValueError:
        return None
    return index % width if -width <= index < width else None


def _csv_inputs(path: Path, options: FileOptions, shape: tuple[int, ...] | None,
                trained: Sequence[str] | None = None, trained_label: str | None = None
                ) -> tuple[Tensor, tuple[str, ...] | None, str, str | None]:
    """A CSV's feature columns for predictions, their header names, what was left out or
    changed ("" for nothing) and the header name of the column left out as the label (None for
    none). The label column (option ``y``, else one named like a label) is left out unread.
    Without one, a file of one column more than the model's features is refused (guessing the
    label column would drop a feature silently); with no model ``shape`` known, the last column
    is the label, as when training. ``trained`` (the model's training column names) and a
    header: the columns are matched by name (see :func:`_csv_inputs_by_name`); an ``x`` option
    still picks them by itself."""
    rows, header, width = _csv_table(path, trained)
    label = None if options.y is None else _csv_label_index(header, options.y, width)
    if options.x is not None:
        columns = [_csv_column(path, s.strip(), "x", header, width) for s in options.x.split(",")]
        if label is not None and label in columns:
            raise ConfigError(f"data option x includes the label column of {path}; remove it")
        return _features(path, "x", _csv_numbers(path, rows, columns, header)), _names(
            header, columns), "", None if header is None or label is None else header[label]
    if header is not None and trained is not None and len(set(trained)) == len(trained):
        return _csv_inputs_by_name(path, rows, header, label, tuple(trained), trained_label,
                                   options)
    if label is None and header is not None:
        lowered = [c.lower() for c in header]
        label = next((lowered.index(n) for n in CSV_LABEL_NAMES if n in lowered), None)
    features = shape[0] if shape is not None and len(shape) == 1 else None
    if label is None and shape is None and width > 1:
        label = width - 1
    elif label is None and features is not None and width == features + 1:
        fix = (f"name the label column ({OPT} y=NAME)" if header is not None else
               f"give the label column's index ({OPT} y={width - 1} for the last)")
        raise DataError(
            f"{path} has {width} columns{'' if header is not None else ' and no header'}, none "
            f"named like a label ({', '.join(CSV_LABEL_NAMES)}), and the model takes "
            f"{features} features: {fix} or drop the extra column"
        )
    columns = [j for j in range(width) if j != label]
    x = _csv_numbers(path, rows, columns, header)
    left_out = "" if label is None else \
        f"column {header[label] if header is not None else label!r} left out as the label"
    name = None if header is None or label is None else header[label]
    return _features(path, "x", x), _names(header, columns), left_out, name


def _some(names: Sequence[str], limit: int = 3) -> str:
    """``'a', 'b', 'c' and 2 more``."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def _csv_inputs_by_name(path: Path, rows: list[tuple[int, list[str]]], header: list[str],
                        label: int | None, trained: tuple[str, ...], trained_label: str | None,
                        options: FileOptions
                        ) -> tuple[Tensor, tuple[str, ...], str, str | None]:
    """The model's training columns (``trained``, distinct names) of a CSV with a header,
    found by name and put in training order. Left out unread as labels: the column of option
    ``y`` (``label``), one named ``trained_label`` (the training label column) and any named
    like a label that is not a training column. A training column the header lacks, or a
    header column that is neither, is refused in one line."""
    known = set(trained)
    if label is not None and header[label] in known:
        raise ConfigError(
            f"data option y={options.y} names column {header[label]!r} of {path} as the label, "
            "but the model was trained on it as a feature; name the label column, or drop the "
            "option")
    dropped = [] if label is None else [label]
    for j, name in enumerate(header):
        if j in dropped or name in known:
            continue
        if name == trained_label or name.lower() in CSV_LABEL_NAMES:
            dropped.append(j)
    others = [n for j, n in enumerate(header) if n not in known and j not in dropped]
    trained_words = _preview(list(trained))
    missing = [n for n in trained if n not in header]
    if missing:
        many = len(missing) > 1
        also = f"; its column{'s' * (len(others) > 1)} {_some(others)} " \
            f"{'are' if len(others) > 1 else 'is'} not among them" if others else ""
        raise DataError(
            f"{path} lacks the column{'s' * many} {_some(missing)} the model was trained on "
            f"({trained_words}){also}: add "
            f"{'them' if many else 'it'} or rename the header to the training names, or pick "
            f"the feature columns in training order with {OPT} x=NAME,...")
    twice = next((n for n in trained if header.count(n) > 1), None)
    if twice is not None:
        raise DataError(f"{path} has two columns named {twice!r} in its header, and the model "
                        f"was trained on one: rename or drop the other")
    if others:
        many = len(others) > 1
        label_fix = "" if many or dropped or not others[0] else \
            f", or name it as the label ({OPT} y={others[0]})"
        raise DataError(
            f"{path} has {'columns' if many else 'a column'} the model did not train on: "
            f"{_some(others)}; drop "
            f"{'them' if many else 'it'}{label_fix} (the model was trained on "
            f"{trained_words})")
    columns = [header.index(n) for n in trained]
    notes = []
    if dropped:
        names = ", ".join(repr(header[j]) for j in dropped)
        notes.append(f"columns {names} left out as labels" if len(dropped) > 1 else
                     f"column {names} left out as the label")
    if columns != sorted(columns):
        notes.append("columns reordered by name as in training")
    x = _csv_numbers(path, rows, columns, header)
    return _features(path, "x", x), trained, "; ".join(notes), \
        header[dropped[0]] if dropped else None


def _names(header: list[str] | None, columns: Sequence[int] | range) -> tuple[str, ...] | None:
    """The header's names of the feature columns (None without a header)."""
    return None if header is None else tuple(header[j] for j in columns)


def _features(path: Path, key: str, value: Any) -> Tensor:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: inputs {key!r} are {array.dtype} ({array.dtype.kind}); give a numeric array"
        )
    if array.ndim < 2:
        raise DataError(
            f"{path}: inputs {key!r} have shape {array.shape}; give one row per example "
            "(N x features, or N x C x H x W)"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: counted below
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise DataError(
            f"{path}: inputs {key!r} hold {bad} NaN or infinite values (or values too large for "
            "float32); drop or fill them"
        )
    return x


def _eight_bit(value: Any) -> bool:
    """8-bit image arrays, which :func:`_image_array` divides by 255."""
    array = np.asarray(value)
    return array.ndim in (3, 4) and array.dtype == np.uint8


def _image_array(value: Any) -> tuple[np.ndarray, str]:
    """Arrays of images as ``N x C x H x W``, and how they were read ("" for feature rows).

    ``N x H x W`` gets one channel; ``N x H x W x C`` with C in (1, 3, 4) and H over 4 (too many
    for channels: channels-last, as Keras and PIL store images) is moved to channels-first;
    8-bit images are divided by 255 (as image folders are).
    """
    array = np.asarray(value)
    if array.ndim not in (3, 4) or array.dtype.kind not in "biuf":
        return array, ""
    steps = []
    if array.ndim == 3:
        array = array[:, None]
        steps.append("N x H x W read as one channel")
    elif array.shape[-1] in (1, 3, 4) and array.shape[1] > 4:
        array = np.moveaxis(array, -1, 1)
        steps.append("channels-last N x H x W x C moved to channels-first")
    if _eight_bit(array):
        array = array.astype(np.float32) / 255.0
        steps.append("8-bit pixels / 255")
    shape = "x".join(str(d) for d in array.shape[1:])
    return array, f"images {shape}" + (f" ({'; '.join(steps)})" if steps else "")


def _label_array(path: Path, key: str, value: Any) -> np.ndarray:
    """Labels as a 1-D array of int64, float64 (whole numbers) or str."""
    array = np.asarray(value)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise DataError(
            f"{path}: labels {key!r} have shape {array.shape}; give one label per row "
            "(shape N; for one-hot rows use y.argmax(1))"
        )
    kind = array.dtype.kind
    if kind == "O":  # a MATLAB cell array of strings
        try:
            array = np.array([str(np.asarray(v).reshape(-1)[0]) for v in array], dtype=str)
        except (IndexError, TypeError, ValueError):
            raise DataError(
                f"{path}: labels {key!r} are a cell array that is not one string per row; "
                "give numbers or strings"
            ) from None
    elif kind == "S":
        array = np.char.decode(array, "utf-8")
    elif kind in "biu":
        array = array.astype(np.int64)
    elif kind == "f":
        array = array.astype(np.float64)
    elif kind != "U":
        raise DataError(f"{path}: labels {key!r} are {array.dtype}; give integers or strings")
    return array


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
    arrays, unused = reader(path, options, side)
    x, image_note = _image_array(arrays["x"])
    raw = _Raw(name, str(path), path.name, _features(path, "x", x), None)
    eight_bit = _eight_bit(arrays["x"])
    raw.image_note, raw.inputs = image_note, (UNIT if eight_bit else None)  # as image folders
    if "y" not in arrays:  # an unlabelled target (maybe with labelled test rows)
        raw.read_note = unused
        if "x_test" in arrays:
            _own_test(raw, path, arrays, eight_bit)
        return raw
    raw.labels = _check_labels(path, "y", _label_array(path, "y", arrays["y"]), len(raw.x))
    if "x_test" in arrays:
        _own_test(raw, path, arrays, eight_bit)
    raw.read_note = unused
    return raw


def _own_test(raw: _Raw, path: Path, arrays: dict[str, np.ndarray], eight_bit: bool) -> None:
    """The file's own test split (``x_test``, ``y_test``) onto ``raw``, checked against x."""
    raw.x_test = _test_inputs(path, arrays, eight_bit)
    raw.labels_test = _check_labels(
        path, "y_test", _label_array(path, "y_test", arrays["y_test"]), len(raw.x_test)
    )
    _check_test_shape(path, raw.x, raw.x_test)
    raw.own_test = f"the file's test arrays ({len(raw.x_test)} rows)"


def _test_inputs(path: Path, arrays: dict[str, np.ndarray], eight_bit: bool) -> Tensor:
    """``x_test`` as a float tensor, stored with the same type as ``x``."""
    if _eight_bit(arrays["x_test"]) != eight_bit:  # one would be scaled, not the other
        raise DataError(
            f"{path}: x is {np.asarray(arrays['x']).dtype} but x_test "
            f"{np.asarray(arrays['x_test']).dtype}; store both with the same type"
        )
    return _features(path, "x_test", _image_array(arrays["x_test"])[0])


def _check_test_shape(path: Path, x: Tensor, x_test: Tensor) -> None:
    if x_test.shape[1:] != x.shape[1:]:
        raise DataError(
            f"{path}: x_test has rows of shape {tuple(x_test.shape[1:])} but x "
            f"{tuple(x.shape[1:])}; give both the same features"
        )


def _check_labels(path: Path, what: str, labels: np.ndarray, rows: int) -> np.ndarray:
    """Row count and whole numbers; float labels become int64."""
    if labels.shape[0] != rows:
        raise DataError(
            f"{path}: {rows} input rows but {labels.shape[0]} labels ({what}); give one label "
            "per row"
        )
    if rows == 0:
        raise DataError(f"{path}: no rows ({what}); give at least one example per class")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels)
        bad |= np.where(bad, 0.0, labels) != np.round(np.where(bad, 0.0, labels))
        if bad.any():
            raise DataError(
                f"{path}: {int(bad.sum())} labels ({what}) are not whole numbers (e.g. "
                f"{labels[bad][0]:g}); give integer or string class labels"
            )
        labels = labels.astype(np.int64)
    return labels


# --- image folders --------------------------------------------------------------------------


def _image_lib() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("reading image folders needs Pillow: pip install pillow") from None
    return Image


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _class_folders(root: Path, part: str) -> list[tuple[str, list[Path]]]:
    dirs = _visible_dirs(root)
    if not dirs:
        flat = " (images directly in a folder are a target without labels: put it on the " \
            "right of ->)" if _image_files(root) else ""
        raise DataError(
            f"{root} has no class folders; put each class's images in its own sub-folder "
            f"({part}/CLASS/image.png){flat}"
        )
    found = []
    for folder in dirs:
        files = _image_files(folder)
        if not files:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add "
                "images or remove the folder"
            )
        found.append((folder.name, files))
    return found


def _is_colour(image: Any) -> bool:
    if image.mode in _GREY_MODES:
        return False
    if image.mode in ("P", "PA"):
        palette = np.asarray(image.getpalette() or [], dtype=np.int64).reshape(-1, 3)
        return bool((palette != palette[:, :1]).any())
    return True


def _decode(image_lib: Any, path: Path, channels: int, size: int | None) -> np.ndarray:
    """One image as float32 C x H x W in [0, 1]."""
    resample = image_lib.Resampling.BILINEAR
    with image_lib.open(path) as image:
        image.load()
        mode = image.mode
        if mode == "F":
            raise DataError(f"image {path} holds floating-point pixels; save it as 8- or 16-bit")
        if mode.startswith("I"):  # 16-bit grey (or 32-bit integer) pixels
            raw = np.asarray(image).astype(np.float64)
            if raw.size and (raw.min() < 0 or raw.max() > 65535):
                raise DataError(f"image {path} has pixels outside 0..65535; save it as 16-bit")
            grey = image_lib.fromarray((raw / 65535.0).astype(np.float32), mode="F")
            if size is not None:
                grey = grey.resize((size, size), resample)
            pixels = np.asarray(grey, dtype=np.float32)[None]
            return np.repeat(pixels, channels, axis=0)
        converted = image.convert("RGB" if channels == 3 else "L")
        if size is not None:
            converted = converted.resize((size, size), resample)
        pixels = np.asarray(converted, dtype=np.float32) / 255.0
        return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def _read_image_folder(root: Path, options: FileOptions, side: _Side = _ALONE) -> _Raw:
    image_lib = _image_lib()
    subdirs = {p.name for p in _visible_dirs(root)}
    split_layout = (
        "train" in subdirs and subdirs <= {"train", "test"} and bool(_visible_dirs(root / "train"))
    )
    loose = _image_files(root)
    if loose and subdirs:  # some images would be silently left out, whichever layout wins
        raise DataError(
            f"{root} holds both images ({len(loose)}, e.g. {loose[0].name}) and sub-folders "
            f"({', '.join(sorted(subdirs)[:5])}); put every image in a class folder (labelled) "
            "or none in sub-folders (a target without labels)"
        )
    flat = side.labels_optional and bool(loose)
    # a target whose train/ holds its images loose (no labels) and test/ its labelled ones
    flat_train = (side.labels_optional and "train" in subdirs and subdirs <= {"train", "test"}
                  and not _visible_dirs(root / "train") and bool(_image_files(root / "train")))
    if flat:  # an unlabelled target: its images lie in the folder itself, no class folders
        parts = {"train": [("", loose)]}
    elif flat_train:
        parts = {"train": [("", _image_files(root / "train"))]}
        if "test" in subdirs and options.test is None:
            parts["test"] = _class_folders(root / "test", "root/test")
    elif split_layout:
        parts = {"train": _class_folders(root / "train", "root/train")}
        if "test" in subdirs and options.test is None:
            parts["test"] = _class_folders(root / "test", "root/test")
    else:
        parts = {"train": _class_folders(root, "root")}
    # Pass 1 reads headers only: every file opens, sizes agree (unless resized), colour or not.
    colour = False
    first: tuple[Path, tuple[int, int]] | None = None
    files: dict[str, list[tuple[Path, str]]] = {}
    for part, folders in parts.items():
        files[part] = [(f, label) for label, paths in folders for f in paths]
        for path, _ in files[part]:
            try:
                with image_lib.open(path) as image:
                    dims, is_colour = image.size, _is_colour(image)
            except Exception as exc:  # Pillow raises many types for a damaged file
                raise DataError(
                    f"image {path} cannot be decoded ({_first_line(exc)}); replace or remove it"
                ) from None
            colour |= is_colour
            if first is None:
                first = (path, dims)
            elif options.size is None and dims != first[1]:
                raise DataError(
                    f"images differ in size: {first[0]} is {first[1][0]}x{first[1][1]} but "
                    f"{path} is {dims[0]}x{dims[1]}; set {OPT} size=N to resize every image "
                    "to N x N"
                )
    assert first is not None
    channels = options.channels or (3 if colour else 1)
    width, height = (options.size, options.size) if options.size else first[1]
    tensors = {}
    for part, items in files.items():
        x = torch.empty(len(items), channels, height, width, dtype=torch.float32)
        for i, (path, _) in enumerate(items):
            try:
                x[i] = torch.from_numpy(_decode(image_lib, path, channels, options.size))
            except DataError:
                raise
            except Exception as exc:
                raise DataError(
                    f"image {path} cannot be decoded ({_first_line(exc)}); replace or remove it"
                ) from None
        tensors[part] = x
    name = str(root)  # as given: a run records it, and a resume reads the same folder
    raw = _Raw(
        name,
        str(root),
        f"{root.name or root.resolve().name}/",
        tensors["train"],
        None if flat or flat_train else np.array([label for _, label in files["train"]],
                                                 dtype=str),
        inputs=UNIT,
    )
    raw.row_names = [str(path) for path, _ in files["train"]]
    shape = "x".join(str(d) for d in (channels, height, width))
    raw.image_note = f"images {shape}" + (" (resized, bilinear)" if options.size else "")
    if "test" in tensors:
        raw.x_test = tensors["test"]
        raw.labels_test = np.array([label for _, label in files["test"]], dtype=str)
        raw.own_test = f"the test/ folder ({len(raw.x_test)} images)"
        raw.test_row_names = [str(path) for path, _ in files["test"]]
    elif (split_layout or flat_train) and "test" in subdirs:
        raw.read_note = "the test/ folder not used"
    return raw


# --- classes, splits, normalisation -----------------------------------------------------------


def _preview(values: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"{shown}, ... ({len(values)} in all)" if len(values) > limit else shown


def _infer_classes(where: str, labels: np.ndarray) -> tuple[Any, ...]:
    classes = tuple(v.item() for v in np.unique(labels))
    if len(classes) < 2:
        raise DataError(
            f"{where}: the training labels hold one class only ({classes[0]!r}); "
            "classification needs at least 2 classes"
        )
    return classes


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
            f"test = {fraction * 100:g}% of each class held out (stratified, seed "
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
                   label_column=raw.label_column)


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
                       normalization=fitted, columns=raw.columns, label_column=raw.label_column)
    assert raw.labels_test is not None and test_x is not None
    test_y = _map_labels(raw.where, raw.labels_test, known, "the source's classes", "test")
    train = Split(x, torch.full((len(x),), UNLABELLED, dtype=torch.int64))
    return Dataset(raw.name, train, Split(test_x, test_y), len(known), description, inputs,
                   known, train_labelled=False, row_names=names, normalization=fitted,
                   columns=raw.columns, label_column=raw.label_column)


def _rows_words(raw: _Raw, rows: int, x: Tensor, extra: str = "") -> str:
    """``120 images 1x28x28``, ``90 rows x 6 features`` or ``90 rows of inputs 2x3x4``."""
    if raw.image_note:
        return f"{rows} {raw.image_note}{extra}"
    if x.dim() == 2:
        return f"{rows} rows{extra} x {x.shape[1]} features"
    return f"{rows} rows{extra} of inputs {'x'.join(str(d) for d in x.shape[1:])}"


def _read(path: Path, kind: str, options: FileOptions, side: _Side = _ALONE) -> _Raw:
    """``side``: read alone or as a pair's source or target (which may have no labels)."""
    if kind == "images":
        return _read_image_folder(path, options, side)
    return _read_feature_file(path, kind, options, side)


def load_file_dataset(
    spec: str | Path,
    options: FileOptions = FileOptions(),
    classes: Sequence[Any] | None = None,
    unlabelled_classes: Callable[[Tensor], int] | None = None,
    width: int | None = None,
    recorded: Normalization | None = None,
) -> Dataset:
    """A Dataset read from a ``.npz``, ``.mat`` or ``.csv`` file or an image folder.

    ``classes`` (original label values in class-index order) fixes the class indices; a label
    not among them raises DataError. ``Dataset.classes`` records the classes used.
    ``unlabelled_classes`` (source-free adaptation: a target file may have no labels) gives
    the class count of a file without labels from its inputs (the trained model's outputs);
    without it, a file without labels is refused. ``width``: the trained model's feature
    count, by which a CSV without a label column is told from one with. ``recorded``: a
    trained model's normalisation, applied with its statistics (``evaluate``, as ``predict``).
    """
    options = parse_file_options(options)
    if recorded is not None:
        options = replace(options, normalize=recorded.steps)
    path = Path(spec)
    kind = _kind(path)
    _check_applicable(options, {kind}, f"{path} ({_KIND_WORDS[kind]})")
    side = _ALONE if unlabelled_classes is None else _Side("target", width)
    raw = _read(path, kind, options, side)
    if raw.labels is None:
        assert unlabelled_classes is not None
        known = classes if classes is not None else range(unlabelled_classes(raw.x))
        return _build_unlabelled(raw, options, tuple(known), recorded)
    return _build(raw, options, classes, recorded=recorded)


def load_rows_to_predict(spec: str | Path, options: FileOptions,
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
        if options.normalize and options.normalize != recorded.steps:
            raise ConfigError(
                f"data option normalize={','.join(options.normalize)}: the model was trained "
                f"on rows normalised by {','.join(recorded.steps)}, which predict applies itself "
                "with the training rows' statistics; drop the option")
        options = replace(options, normalize=recorded.steps)
    if options.test is not None:
        raise ConfigError(f"data option test={options.test}: predict reads every row of "
                          f"{spec}; remove it")
    path = Path(spec)
    kind = _kind(path)
    _check_applicable(options, {kind}, f"{path} ({_KIND_WORDS[kind]})")
    if shape is None and width is not None:
        shape = (width,)
    if isinstance(columns, str):
        raise ConfigError(f"columns must be a sequence of column names, got the string "
                          f"{columns!r}")
    raw = _read_inputs(path, kind, options, None if shape is None else tuple(shape),
                       None if columns is None else tuple(columns), label_column)
    if shape is not None:
        _check_input_shape(raw, kind, tuple(shape))
    return _build_unlabelled(raw, options, tuple(classes_of(raw.x)), recorded)


def _read_inputs(path: Path, kind: str, options: FileOptions,
                 shape: tuple[int, ...] | None, trained: Sequence[str] | None = None,
                 trained_label: str | None = None) -> _Raw:
    """Every input row of a file or folder (``x`` then ``x_test``), labels never read; rows
    named by image path, else by index (``x_test:i``). ``trained``/``trained_label``: the
    model's training column names and label column (a CSV's columns are matched by name)."""
    name = str(path)
    if kind == "csv":
        x, columns, left_out, label_column = _csv_inputs(path, options, shape, trained,
                                                         trained_label)
        raw = _Raw(name, name, path.name, x, None, columns=columns, read_note=left_out,
                   label_column=label_column)
    elif kind == "images":
        raw = _read_image_folder(path, options, _Side("target"))
    else:
        reader = _read_npz if kind == "npz" else _read_mat
        arrays, _ = reader(path, options, _Side("predict"))
        eight_bit = _eight_bit(arrays["x"])
        x, image_note = _image_array(arrays["x"])
        raw = _Raw(name, name, path.name, _features(path, "x", x), None,
                   image_note=image_note, inputs=UNIT if eight_bit else None)
        if "x_test" in arrays:
            raw.x_test = _test_inputs(path, arrays, eight_bit)
            _check_test_shape(path, raw.x, raw.x_test)
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
    source: str,
    target: str,
    options: FileOptions = FileOptions(),
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> DomainPair:
    """A DomainPair whose sides are data files (or registered dataset names).

    The target's labels are mapped with the source's classes (a registered dataset's classes
    are its indices 0..K-1); each side is split and normalised on its own (statistics of its own
    training split). ``data_dir`` and ``download`` apply to a registered side.
    """
    options = parse_file_options(options)
    sides = {"source": str(source), "target": str(target)}
    kinds = {role: _kind(Path(s)) for role, s in sides.items() if is_data_path(s)}
    if not kinds:
        raise ConfigError(
            f"neither {source!r} nor {target!r} is a data file; name a registered pair with "
            "load_pair instead"
        )
    what = " and ".join(f"{sides[r]} ({_KIND_WORDS[k]})" for r, k in kinds.items())
    _check_applicable(options, set(kinds.values()), what)
    src_columns = None
    if "source" in kinds:
        src_raw = _read(Path(source), kinds["source"], options, _Side("source"))
        src, src_columns = _build(src_raw, options, None), src_raw.columns
    else:
        src = _registered(str(source), options, None, "", data_dir, download)
    classes = src.classes if src.classes is not None else tuple(range(src.num_classes))
    src_name = Path(source).name
    name = f"{source}->{target}"  # as given: a run records it, and a resume reads the same

    def check_shape(shape: tuple[int, ...]) -> None:  # before labels: the likelier mistake
        if src.input_shape != shape:
            raise DataError(
                f"pair {name}: source {_shape_words(src.input_shape)} vs target "
                f"{_shape_words(shape, src.input_shape)} ({source} vs {target}); both domains "
                "need the same input shape"
            )

    classes_from = f"the source's classes ({src_name})"
    if "target" in kinds:
        width = src.input_shape[0] if len(src.input_shape) == 1 else None
        try:
            raw = _read(Path(target), kinds["target"], options, _Side("target", width))
            check_shape(tuple(raw.x.shape[1:]))
            _align_columns(raw, src_columns, target)
            tgt = _build(raw, options, classes, classes_from)
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
    and sizes. Registered names are left out."""
    import hashlib

    digests: dict[str, str] = {}
    for side in spec.split("->"):
        if not is_data_path(side):
            continue
        path, digest = Path(side), hashlib.sha256()
        if path.is_dir():
            for item in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(f"{item.relative_to(path)}\0{item.stat().st_size}\n".encode())
        else:
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        digests[side] = digest.hexdigest()
    return digests
