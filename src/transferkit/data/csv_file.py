"""``.csv`` files: the header, the label column and the numeric feature columns, for training
and for predictions (whose columns are matched by the model's training names)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from transferkit.data.array_files import _features
from transferkit.data.file_options import OPT, FileOptions
from transferkit.data.file_records import _preview
from transferkit.errors import ConfigError, DataError

CSV_LABEL_NAMES = ("label", "y", "class", "target")


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
    (names None without a header); see :mod:`transferkit.data.files` for the rules.

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
