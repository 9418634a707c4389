"""``.csv`` files: the header, the label column and the numeric feature columns, for training
and for predictions (whose columns are matched by the model's training names).

What a spreadsheet or a script writes is read as meant: a UTF-8 byte-order mark, UTF-16 with
its mark (Excel's "Unicode text"), gzip compression, CRLF or CR line ends, comma, semicolon,
tab or ``|`` separators (Excel's ``sep=;`` first line too), decimal commas in a semicolon file
(a European Excel export) and trailing separators. What cannot be read without a guess is
refused in one line naming the line, the column and the fix: another encoding, a missing
value, a title line above the header, an unclosed quote, an unnamed or repeated column name,
a label column of measurements rather than classes."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import zlib
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import numpy as np
from torch import Tensor

from transferkit.data.array_files import _features
from transferkit.data.file_options import OPT, FileOptions
from transferkit.data.file_records import _first_line, _preview
from transferkit.errors import ConfigError, DataError

CSV_LABEL_NAMES = ("label", "y", "class", "target")
# Cells that mean "no value" in the exports of pandas, R, Excel and databases.
MISSING = frozenset({"na", "n/a", "#n/a", "nan", "null", "none", "nil", "missing", "-", "?"})
_DELIMITERS = (",", ";", "\t", "|")  # in order of preference when several fit
_SNIFF_LINES = 50  # the separator is the one that splits these lines alike
_SEP_LINE = re.compile(r'\s*"?sep=(.)"?,?\s*', re.IGNORECASE)  # Excel's separator line
_DECIMAL_COMMA = re.compile(r"[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?")
_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2},\d{3}")  # 1,234: a decimal comma or thousands?
_SAVE_UTF8 = "save it as UTF-8 (Excel: Save As > 'CSV UTF-8')"
# Numeric class labels: at least this many distinct values with fewer than this many rows
# each on average look like a quantity to predict, not classes (see _csv_labels).
MANY_CLASSES, FEW_ROWS = 20, 3
_EXACT = 2**53  # float64 holds every integer below it; above, distinct labels may merge


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_text(path: Path) -> str:
    """The file's text: UTF-8 (a byte-order mark dropped) or UTF-16 with its mark, either of
    them gzip-compressed. Other bytes are refused where they are, never decoded by a guess: a
    wrong guess changes class names and column names silently."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is gzip-compressed but damaged ({_first_line(exc)}); "
                            "compress it again, or give the plain .csv") from None
    if data[:4] == b"PK\x03\x04":
        raise DataError(f"{path} is a zip archive (an Excel .xlsx workbook?), not CSV text; "
                        f"{_SAVE_UTF8}, or unzip it")
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise DataError(f"{path} is an Excel .xls workbook, not CSV text; {_SAVE_UTF8}")
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} starts as UTF-16 text but byte {exc.start} is not; "
                            f"{_SAVE_UTF8}") from None
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, data, exc.start) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{path}, line {line}: a NUL byte, so not CSV text (UTF-16 without its "
                        f"byte-order mark, or a binary file?); {_SAVE_UTF8}")
    return text


def _not_utf8(path: Path, data: bytes, at: int) -> DataError:
    """Where the first byte that is not UTF-8 is: its line, its column, and the cell as
    Latin-1 would read it (the usual Windows export), so the user sees what to fix."""
    line_start = data.rfind(b"\n", 0, at) + 1
    line_end = data.find(b"\n", at)
    line_text = data[line_start:len(data) if line_end < 0 else line_end].decode("latin-1")
    head = [ln for ln in data[:4096].decode("latin-1").splitlines() if ln.strip()][:10]
    delimiter, _ = _delimiter(head)
    offset = at - line_start
    column = line_text[:offset].count(delimiter)
    cell = line_text.split(delimiter)[column].strip().strip('"')
    line = data.count(b"\n", 0, at) + 1
    return DataError(
        f"{path}, line {line}, column index {column}: byte "
        f"0x{data[at]:02x} is not UTF-8 (the cell reads {cell!r} in Latin-1, a Windows "
        f"export?); {_SAVE_UTF8}"
    )


def _delimiter(head: Sequence[str]) -> tuple[str, bool]:
    """(the separator, whether the first line is Excel's ``sep=X`` naming it) of a CSV whose
    first non-blank lines are ``head``. The separator is the one of comma, semicolon and tab
    (or ``|``) that splits every line of ``head`` into the same number (2 or more) of cells; of
    several,
    the one giving the most numbers (a ``0,5;1,5`` row is two numbers, not ``0``, ``5;1`` and
    ``5``), else the first of that order. None fits (ragged rows): a comma when the first line
    has one, as the message about the ragged row then says."""
    if head and (found := _SEP_LINE.fullmatch(head[0])):
        return found.group(1), True
    fits: list[tuple[str, list[list[str]]]] = []
    for delimiter in _DELIMITERS:
        try:
            rows = [r for r in csv.reader(head, delimiter=delimiter) if any(c.strip() for c in r)]
        except csv.Error:  # a cell over the size limit: said when the file is read
            continue
        if len(head) > _SNIFF_LINES:
            rows = rows[:-1]  # the last line read may end inside a quoted cell
        widths = {len(r) for r in rows}
        if len(widths) == 1 and widths.pop() > 1:
            fits.append((delimiter, rows))
    if len(fits) > 1:
        def numbers(rows: list[list[str]]) -> int:
            return sum(_is_number(c.strip()) or bool(_DECIMAL_COMMA.fullmatch(c.strip()))
                       for r in rows for c in r)
        return max(fits, key=lambda fit: numbers(fit[1]))[0], False  # max keeps the first
    if fits:
        return fits[0][0], False
    first = head[0] if head else ""
    return next((d for d in _DELIMITERS if d in first), ","), False


def _decimal_commas(rows: list[tuple[int, list[str]]], delimiter: str) -> bool:
    """Whether the numbers of a file separated by semicolons (or tabs or ``|``) are written with
    a decimal comma (``0,5``): some cell is such a number and none is written with a point.
    Outside a semicolon file (Excel's European export), ``1,234`` alone could be a thousands
    separator, so some cell must be no such (``0,5``, ``12,25``)."""
    if delimiter == ",":
        return False
    cells = [c for _, row in rows for c in row]
    commas = [c for c in cells if "," in c and _DECIMAL_COMMA.fullmatch(c)]
    if not commas or any("." in c and _is_number(c) for c in cells):
        return False
    return delimiter == ";" or not all(_THOUSANDS.fullmatch(c) for c in commas)


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


def _not_a_number(cell: str) -> str:
    """Why a feature cell is no number, and its fix."""
    if not cell:
        return ("is empty (a missing value); fill it in or drop the row: transferkit fills in "
                "no value")
    if cell.lower() in MISSING:
        return (f"{cell!r} marks a missing value; fill it in or drop the row: transferkit "
                "fills in no value")
    if "," in cell and _is_number(cell.replace(",", "")):
        return (f"{cell!r} is not a number (a decimal comma or a thousands separator?); write "
                "numbers with a decimal point and no separators, as 1234.5")
    tail = "; a quoted cell runs over several lines: is a closing quote (\") missing?" \
        if "\n" in cell or "\r" in cell else \
        f"; feature columns must be numeric (leave a text column out: {OPT} x=NAME,...)"
    return f"{cell!r} is not a number{tail}"


def _csv_numbers(path: Path, rows: list[tuple[int, list[str]]], columns: list[int],
                 header: list[str] | None) -> np.ndarray:
    """The feature columns as float64; a cell that is not a number, or NaN, infinite or too
    large for float32, is named by line and column."""
    cells = [[row[j] for j in columns] for _, row in rows]

    def where(i: int, k: int) -> str:
        j = columns[k]
        return f"line {rows[i][0]}, column {header[j]!r}" if header is not None else \
            f"line {rows[i][0]}, column index {j}"

    try:
        x = np.array(cells, dtype=np.float64).reshape(len(rows), len(columns))
    except ValueError:  # find the cell, then parse as Python does
        for i, values in enumerate(cells):
            for k, cell in enumerate(values):
                if not _is_number(cell):
                    raise DataError(f"{path}, {where(i, k)}: {_not_a_number(cell)}") from None
        x = np.array([[float(c) for c in values] for values in cells], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(x) <= np.finfo(np.float32).max)  # NaN, inf, or inf in float32
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: inputs 'x' hold {int(bad.sum())} NaN or infinite values (or values too "
            f"large for float32), the first at {where(i, k)} ({cells[i][k]!r}); drop or fill "
            "them"
        )
    return x


def _csv_table(path: Path, names: Sequence[str] | None = None
               ) -> tuple[list[tuple[int, list[str]]], list[str] | None, int]:
    """(rows as (line, cells), the header or None, the column count) of a CSV file, every
    row checked to have as many cells as the header (or the first row). ``names``: a header
    a trained model expects; a first row holding them all is that header, numbers or not.
    Header cells without a name at the end (a trailing separator) are dropped, with the
    empty cells below them."""
    text = _csv_text(path)
    head = list(islice((ln for ln in io.StringIO(text, newline="") if ln.strip()),
                       _SNIFF_LINES + 1))
    delimiter, sep_line = _delimiter(head)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    spans: dict[int, int] = {}  # rows over several lines: first line -> last line
    start = 1
    try:
        for row in reader:
            cells = [cell.strip() for cell in row]
            if any(cells) and sep_line:
                sep_line = False  # Excel's "sep=;" line names the separator; no data
            elif any(cells):
                rows.append((start, cells))
                if reader.line_num > start:
                    spans[start] = reader.line_num
            start = reader.line_num + 1
    except csv.Error as exc:
        why = f"a cell over {csv.field_size_limit()} characters from here: is a quote (\") " \
            "left open?" if "field limit" in str(exc) else str(exc)
        raise DataError(f"{path}, line {start}: {why}") from None
    if not rows:
        raise DataError(f"{path} is empty; give one row per example and a label column")
    if _decimal_commas(rows, delimiter):
        rows = [(line, [c.replace(",", ".") if "," in c and _DECIMAL_COMMA.fullmatch(c) else c
                        for c in row]) for line, row in rows]
    first_line, first = rows[0]
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
        raise DataError(f"{path} has a header row but no data rows; add one row per example")
    if header is not None and not header[-1]:  # "a,b,label," : a trailing separator
        width = len(header)
        while width > 1 and not header[width - 1]:
            width -= 1
        if all(not any(row[width:]) for _, row in rows):
            header = header[:width]
    width = len(header) if header is not None else len(rows[0][1])
    rows = [(line, row[:width] if len(row) > width and not any(row[width:]) else row)
            for line, row in rows]
    _check_widths(path, rows, header, width, first_line, spans)
    return rows, header, width


def _check_widths(path: Path, rows: list[tuple[int, list[str]]], header: list[str] | None,
                  width: int, first_line: int, spans: dict[int, int]) -> None:
    """Every row of ``width`` cells, else one line naming the row; when every row below the
    first has another width, the first line is named (a title or comment line above the
    header), and a row over several lines is said (an unclosed quote)."""
    bad = next(((line, row) for line, row in rows if len(row) != width), None)
    if bad is None:
        return
    line, row = bad
    body = rows if header is not None else rows[1:]
    widths = {len(r) for _, r in body}
    if len(widths) == 1 and len(body) > 1 and line not in spans:
        below = widths.pop()
        raise DataError(
            f"{path}, line {first_line}: {width} cell{'s' * (width != 1)}, but the "
            f"{len(body)} rows below have {below}; is it a title or comment line (delete it), "
            "or does the header lack a column's name?"
        )
    quote = f"; a quoted cell runs from line {line} to line {spans[line]}: is a closing quote " \
        "(\") missing?" if line in spans else "; give every row the same columns"
    raise DataError(
        f"{path}, line {line}: {len(row)} cells, but the "
        f"{'header' if header is not None else 'first row'} has {width}{quote}"
    )


def _check_names(path: Path, header: list[str] | None, columns: Sequence[int]) -> None:
    """The header names every column read (``columns``), each once: a column without a name is
    most often a row index (pandas' ``to_csv`` writes one), and of two columns of one name a
    field file's cannot be matched to the training one, nor told from a label column."""
    if header is None:
        return
    for j in columns:
        if not header[j]:
            index = " (a row index? pandas writes one unless to_csv(..., index=False))" \
                if j == 0 else ""
            raise DataError(
                f"{path}: the header gives the column at index {j} no name{index}; name it, or "
                f"drop it, or pick the columns to read with {OPT} x=NAME,..."
            )
    used, seen = set(columns), dict[str, int]()
    for j, name in enumerate(header):
        if name in seen and (j in used or seen[name] in used):
            raise DataError(
                f"{path}: the header names two columns {name!r} (at indices {seen[name]} and "
                f"{j}); rename one, or drop it"
            )
        seen.setdefault(name, j)


def _label_number(cell: str) -> int | None:
    """A numeric label cell as an exact int (``7``, ``7.0``, ``7e0``); None when it is no
    whole number, or one too large for int64 or (written as a float) to be exact."""
    try:
        value = int(cell)
    except ValueError:
        number = float(cell)
        if number != number or abs(number) == float("inf") or not number.is_integer() \
                or abs(number) >= _EXACT:
            return None
        value = int(number)
    return value if -(2**63) <= value < 2**63 else None  # int64


def _csv_labels(path: Path, rows: list[tuple[int, list[str]]], label: int,
                header: list[str] | None, guessed: str | None) -> np.ndarray:
    """The label column's cells as int64 (numbers, read exactly) or strings. Refused in one
    line naming the row: an empty cell, a missing-value mark among numbers (``NA`` would be a
    class), a number that is no whole number or too large for an exact one (1e300 was cast to
    int64 garbage). ``guessed`` (why the last column was taken, None when named):
    numbers of at least MANY_CLASSES distinct values with fewer than FEW_ROWS rows each look
    like a measurement, and are refused unless option ``y`` names the column."""
    name = f"{header[label]!r}" if header is not None else f"index {label}"
    option = f"{OPT} y={header[label] if header is not None else label}"
    texts = [row[label] for _, row in rows]
    empty = [line for (line, _), cell in zip(rows, texts, strict=True) if not cell]
    if empty:
        trailing = label == len(rows[0][1]) - 1 and len(empty) == len(rows)
        hint = " (every row ends in a separator?)" if trailing else ""
        raise DataError(f"{path}, line {empty[0]}: the label cell is empty{hint}; give every row "
                        "a label")
    numeric = [_is_number(c) for c in texts]
    if not all(numeric):
        if any(numeric):
            for (line, _), cell, number in zip(rows, texts, numeric, strict=True):
                if not number and cell.lower() in MISSING:
                    raise DataError(
                        f"{path}, line {line}: label {cell!r} (column {name}) marks a missing "
                        "label among numbers; give the row its class, or drop it")
        return np.array(texts, dtype=str)
    values = [_label_number(c) for c in texts]
    bad = [i for i, v in enumerate(values) if v is None]
    if bad:
        line, cell = rows[bad[0]][0], texts[bad[0]]
        if cell.lower() in MISSING:  # nan
            raise DataError(f"{path}, line {line}: label {cell!r} (column {name}) marks a "
                            "missing label; give the row its class, or drop it")
        number = float(cell)
        if number.is_integer():
            raise DataError(
                f"{path}, line {line}: label {cell} (column {name}) is too large for an exact "
                "class number; give the classes smaller numbers, or names")
        more = f" (nor are {len(bad) - 1} other labels)" if len(bad) > 1 else ""
        raise DataError(
            f"{path}, line {line}: label {cell} (column {name}) is not a whole number{more}; "
            f"class labels are whole numbers or names: a quantity to predict? transferkit "
            f"trains classifiers: bin it into classes, or name the class column with {OPT} "
            "y=NAME"
        )
    labels = np.array(values, dtype=np.int64)
    distinct = len(np.unique(labels))
    if guessed is not None and distinct >= MANY_CLASSES and distinct * FEW_ROWS > len(labels):
        raise DataError(
            f"{path}: the label column {name} ({guessed}) holds {distinct} distinct numbers in "
            f"{len(labels)} rows: a quantity to predict rather than classes? transferkit trains "
            f"classifiers: bin it into classes, name the class column with {OPT} y=NAME, or "
            f"read these numbers as classes with {option}"
        )
    return labels


def _read_csv(
    path: Path, options: FileOptions, unlabelled_width: int | None = None
) -> tuple[Tensor, np.ndarray | None, str, tuple[str, ...] | None, str | None]:
    """(x, labels, label note, feature column names, label column name) from a CSV file
    (names None without a header); see :mod:`transferkit.data.files` for the rules.

    ``unlabelled_width`` (a pair's target, or a file a trained model is scored on: the
    model's feature count): a file of exactly that many columns, none named like a label and
    no ``x``/``y`` option, has no label column (labels None); one more column is a label
    column as usual. Its labels map onto known classes, so a label column of many distinct
    numbers is questioned only without it (where the classes are inferred)."""
    rows, header, width = _csv_table(path)
    lowered = [c.lower() for c in header] if header is not None else []
    if (unlabelled_width == width and options.x is None and options.y is None
            and not any(n in lowered for n in CSV_LABEL_NAMES)):
        _check_names(path, header, range(width))
        x = _csv_numbers(path, rows, list(range(width)), header)
        return (_features(path, "x", x), None, "no label column", _names(header, range(width)),
                None)
    if width < 2:
        raise DataError(f"{path} has {width} column; give feature columns and a label column, "
                        "separated by commas (or semicolons, tabs or |)")
    guessed: str | None = None
    if options.y is not None:
        label = _csv_column(path, options.y, "y", header, width)
    else:
        named = next((lowered.index(n) for n in CSV_LABEL_NAMES if n in lowered), None)
        label = width - 1 if named is None else named
        # A column named like a label is taken at its word (a few-shot file of many classes).
        guessed = None if named is not None else \
            f"the last column; none is named {', '.join(CSV_LABEL_NAMES)}"
    if options.x is not None:
        columns = [_csv_column(path, s.strip(), "x", header, width) for s in options.x.split(",")]
        if label in columns:
            raise ConfigError(f"data option x includes the label column of {path}; remove it")
    else:
        columns = [j for j in range(width) if j != label]
    _check_names(path, header, [*columns, label])
    x = _csv_numbers(path, rows, columns, header)
    labels = _csv_labels(path, rows, label, header,
                         guessed if unlabelled_width is None else None)
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
        _check_names(path, header, columns)
        return _features(path, "x", _csv_numbers(path, rows, columns, header)), _names(
            header, columns), "", None if header is None or label is None else header[label]
    if header is not None:  # a column without a name is refused, never read by position
        _check_names(path, header, [j for j, n in enumerate(header) if not n and j != label])
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
