"""CSV files as users bring them: Excel and pandas exports, other encodings, separators and
number formats, missing values, odd headers and label columns. Each is read as meant, or
refused in one line naming the file, the line or column, and the fix (never read wrongly).

Every file is a few rows written by the test into pytest's temporary folder.
"""

from __future__ import annotations

import codecs
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import transferkit as tk
from conftest import FAST, TINY, CliRunner
from transferkit.data.file_options import FileOptions, is_data_path
from transferkit.data.files import load_file_dataset, load_rows_to_predict
from transferkit.errors import DataError

ALL = FileOptions(test="all")
X = [[0.125, 1.5, -2.25], [1.0, 0.5, 3.75], [2.5, -1.25, 0.0], [3.0, 2.0, 1.5]]
Y = [0, 1, 0, 1]


def table(sep: str = ",", decimal: str = ".", header: str = "a,b,c,label") -> str:
    """The rows of X and Y as CSV text with this separator and decimal mark."""
    lines = [header.replace(",", sep)] if header else []
    lines += [sep.join([*(f"{v:g}".replace(".", decimal) for v in row), str(k)])
              for row, k in zip(X, Y, strict=True)]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


def read(path: Path, **options: object) -> tuple[np.ndarray, list, tuple[str, ...] | None]:
    data = load_file_dataset(path, FileOptions(test="all", **options))  # type: ignore[arg-type]
    return data.train.x.numpy(), list(data.classes), data.columns


def refused(path: Path, words: str, **options: object) -> str:
    with pytest.raises(DataError) as caught:
        read(path, **options)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    assert words in message, message
    return message


@pytest.mark.parametrize("dialect", ["bom", "crlf", "cr", "tab", "semicolon", "pipe",
                                     "excel_sep_line", "utf16", "gzip", "trailing_separator"])
def test_excel_and_other_dialects_read_as_the_plain_file(tmp_path: Path, dialect: str) -> None:
    """Before: a ``sep=;`` line, ``|``, UTF-16 (Excel's "Unicode text"), gzip and a trailing
    separator were refused with a message that named no fix (or 'not UTF-8')."""
    plain = read(write(tmp_path / "plain.csv", table()))
    texts: dict[str, str | bytes] = {
        "bom": "\ufeff" + table(),
        "crlf": table().replace("\n", "\r\n"),
        "cr": table().replace("\n", "\r"),
        "tab": table("\t"),
        "semicolon": table(";"),
        "pipe": table("|"),
        "excel_sep_line": "\ufeffsep=;\r\n" + table(";", ",").replace("\n", "\r\n"),
        "utf16": codecs.BOM_UTF16_LE + table("\t").encode("utf-16-le"),
        "gzip": gzip.compress(table().encode()),
        "trailing_separator": table().replace("\n", ",\n"),
    }
    name = "d.csv.gz" if dialect == "gzip" else "d.csv"
    x, classes, columns = read(write(tmp_path / name, texts[dialect]))
    np.testing.assert_array_equal(x, plain[0])
    assert classes == plain[1] == [0, 1] and columns == plain[2] == ("a", "b", "c")
    if dialect == "gzip":
        assert is_data_path("field.csv.gz") and is_data_path("FIELD.CSV.GZ")


def test_decimal_commas_are_read_where_unambiguous_and_refused_where_not(tmp_path: Path) -> None:
    """A European Excel export (``;`` and ``0,125``): its numbers were refused as text
    ("'0,125' is not a number"), with or without a header."""
    plain = read(write(tmp_path / "plain.csv", table()))[0]
    np.testing.assert_array_equal(read(write(tmp_path / "eu.csv", table(";", ",")))[0], plain)
    bare = read(write(tmp_path / "bare.csv", table(";", ",", header="")))
    np.testing.assert_array_equal(bare[0], plain)
    assert bare[2] is None
    np.testing.assert_array_equal(read(write(tmp_path / "tab.csv", table("\t", ",")))[0], plain)
    # '1,500' in a tab file: a thousands separator or a decimal comma? Neither is guessed.
    thousands = write(tmp_path / "th.csv", "a\tb\tlabel\n1,500\t2\t0\n2,250\t3\t1\n")
    refused(thousands, "line 2, column 'a': '1,500' is not a number (a decimal comma or a "
            "thousands separator?); write numbers with a decimal point")
    mixed = write(tmp_path / "mixed.csv", "a;b;label\n0.5;2;0\n0,5;3;1\n")
    refused(mixed, "line 3, column 'a': '0,5' is not a number (a decimal comma")
    quoted = write(tmp_path / "quoted.csv", 'a,b,label\n"1,500",2,0\n3,4,1\n')
    refused(quoted, "'1,500' is not a number (a decimal comma or a thousands separator?)")


def test_other_encodings_and_binaries_are_refused_where_they_are(tmp_path: Path) -> None:
    """A Latin-1 file was "not UTF-8 text" with no line; a zip (an .xlsx renamed) and a file
    of NUL bytes were "not UTF-8" and "a header row but no data rows"."""
    latin = write(tmp_path / "l.csv", "a,b,label\n1,2,chat\n3,4,b\u00e9b\u00e9\n", "latin-1")
    refused(latin, "line 3, column index 2: byte 0xe9 is not UTF-8 (the cell reads 'bébé' in "
            "Latin-1, a Windows export?); save it as UTF-8 (Excel: Save As > 'CSV UTF-8')")
    refused(write(tmp_path / "x.csv", b"PK\x03\x04" + bytes(range(40))), "zip archive (an "
            "Excel .xlsx workbook?)")
    refused(write(tmp_path / "n.csv", table().encode("utf-16-le")), "line 1: a NUL byte")
    damaged = write(tmp_path / "d.csv.gz", gzip.compress(table().encode())[:20])
    refused(damaged, "is gzip-compressed but damaged")


def test_unnamed_and_repeated_columns_are_refused_not_read(tmp_path: Path) -> None:
    """pandas' ``to_csv`` index column (header ``''``) was read as a feature, and of two
    columns named ``label`` the second was a feature: the label itself, silently."""
    index = write(tmp_path / "i.csv", ",a,b,c,label\n" + "".join(
        f"{i},{table(header='').splitlines()[i]}\n" for i in range(4)))
    refused(index, "the header gives the column at index 0 no name (a row index? pandas writes "
            "one unless to_csv(..., index=False))")
    x, _, columns = read(index, x="a,b,c")  # the fix it names
    assert columns == ("a", "b", "c") and x[0, 0] == pytest.approx(0.125)
    twice = write(tmp_path / "t.csv", "a,label,c,label\n1,0,2,0\n3,1,4,1\n")
    refused(twice, "the header names two columns 'label' (at indices 1 and 3); rename one")
    refused(write(tmp_path / "a.csv", table(header="a,a,c,label")), "two columns 'a'")
    with pytest.raises(DataError, match=r"the column at index 0 no name"):
        load_rows_to_predict(index, FileOptions(), lambda x: [0, 1], width=3,
                             columns=("a", "b", "c"), label_column="label")


@pytest.mark.parametrize(("cell", "words"), [
    ("", "column 'b': is empty (a missing value); fill it in or drop the row"),
    ("NA", "column 'b': 'NA' marks a missing value; fill it in or drop the row"),
    ("nan", "inputs 'x' hold 1 NaN or infinite values (or values too large for float32), the "
            "first at line 4, column 'b' ('nan'); drop or fill them"),
    ("1e300", "the first at line 4, column 'b' ('1e300')"),
], ids=["empty", "NA", "nan", "1e300"])
def test_a_missing_feature_value_names_its_line_and_column(tmp_path: Path, cell: str,
                                                            words: str) -> None:
    """NaN, inf and 1e300 were refused without a row or column; '' and 'NA' as "not a
    number"."""
    lines = table().splitlines()
    lines[3] = lines[3].replace("-1.25", cell)
    message = refused(write(tmp_path / "m.csv", "\n".join(lines) + "\n"), words)
    assert "line 4" in message


def test_labels_are_read_exactly_and_missing_or_impossible_ones_refused(tmp_path: Path) -> None:
    """Before: 'NA' among numbers was a class (every label turned into text), 1e300 became
    class -9223372036854775808, and labels above 2**53 that differ merged into one class."""
    as_float = read(write(tmp_path / "f.csv", table().replace(",0\n", ",0.0\n")))
    assert as_float[1] == [0, 1]
    big = 2**53
    ids = write(tmp_path / "ids.csv", f"a,label\n1,{big}\n2,{big + 1}\n3,{big}\n4,{big + 1}\n")
    assert read(ids)[1] == [big, big + 1]
    spaced = read(write(tmp_path / "s.csv", "a,label\n1, cat\n2,dog \n3,cat\n"))
    assert spaced[1] == ["cat", "dog"]
    lines = table().splitlines()
    lines[2] = lines[2][:-1] + "NA"
    refused(write(tmp_path / "na.csv", "\n".join(lines) + "\n"),
            "line 3: label 'NA' (column 'label') marks a missing label among numbers")
    refused(write(tmp_path / "nan.csv", "\n".join(lines).replace("NA", "nan") + "\n"),
            "line 3: label 'nan' (column 'label') marks a missing label")
    refused(write(tmp_path / "huge.csv", table().replace(",1\n", ",1e300\n")),
            "line 3: label 1e300 (column 'label') is too large for an exact class number")
    refused(write(tmp_path / "half.csv", table().replace(",1\n", ",1.5\n")),
            "line 3: label 1.5 (column 'label') is not a whole number (nor are 1 other labels)")
    refused(write(tmp_path / "bare.csv", table(header="").replace("\n", ",\n")),
            "line 1: the label cell is empty (every row ends in a separator?)")


def test_a_label_column_of_many_numbers_is_taken_for_a_measurement(tmp_path: Path) -> None:
    """A last column 'price' of 30 whole numbers in 60 rows trained a 30-class classifier
    without a word; option y names it as classes, and a file scored by a model (its classes
    known) is not questioned."""
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{100 + 7 * (i // 2)}" for i, (a, b) in
            enumerate(rng.normal(size=(60, 2)))]
    prices = write(tmp_path / "p.csv", "a,b,price\n" + "\n".join(rows) + "\n")
    refused(prices, "the label column 'price' (the last column; none is named label, y, class, "
            "target) holds 30 distinct numbers in 60 rows: a quantity to predict rather than "
            "classes? transferkit trains classifiers: bin it into classes, name the class "
            "column with --data-opt y=NAME, or read these numbers as classes with --data-opt "
            "y=price")
    assert len(read(prices, y="price")[1]) == 30
    scored = load_file_dataset(prices, ALL, classes=list(range(100, 310, 7)),
                               unlabelled_classes=lambda x: 30, width=2)
    assert scored.num_classes == 30
    few = write(tmp_path / "few.csv", "a,b,price\n" + "\n".join(rows[:24:2] * 3) + "\n")
    assert len(read(few)[1]) == 12  # 12 classes of 3 rows: classes as before
    named = write(tmp_path / "named.csv", "a,b,label\n" + "\n".join(rows) + "\n")
    assert len(read(named)[1]) == 30  # a column named like a label is taken at its word


def test_a_title_line_or_an_unclosed_quote_is_named(tmp_path: Path) -> None:
    """Before: "line 2: 4 cells, but the first row has 1" for a title line above the header,
    and the last line of the file for an unclosed quote (the cell ran to the end)."""
    refused(write(tmp_path / "t.csv", "# exported 2024-01-01\n" + table()),
            "line 1: 1 cell, but the 5 rows below have 4; is it a title or comment line "
            "(delete it), or does the header lack a column's name?")
    lines = table().splitlines()
    lines[2] = '"' + lines[2]
    refused(write(tmp_path / "q.csv", "\n".join(lines) + "\n"),
            "line 3: 1 cells, but the header has 4; a quoted cell runs from line 3 to line 5: "
            "is a closing quote (\") missing?")
    long = write(tmp_path / "l.csv", 'a,b,label\n"' + "1" * 200_000 + "\n" + table())
    refused(long, "line 2: a cell over 131072 characters from here: is a quote (\") left open?")


def test_cli_predicts_a_european_export_as_the_plain_file(tmp_path: Path,
                                                          cli: CliRunner) -> None:
    """A model trained on a comma file predicts a semicolon, decimal-comma, BOM, CRLF field
    file with its columns in another order exactly as the training file; a Latin-1 file and
    an index column are one line and exit 2."""
    rng = np.random.default_rng(1)
    y = np.arange(30) % 2
    x = rng.normal(size=(30, 3)) + y[:, None]
    train = write(tmp_path / "train.csv", "a,b,c,label\n" + "".join(
        f"{p:.4f},{q:.4f},{r:.4f},{k}\n" for (p, q, r), k in zip(x, y, strict=True)))
    field = write(tmp_path / "field.csv", "\ufeffsep=;\r\nc;a;b\r\n" + "".join(
        f"{r:.4f};{p:.4f};{q:.4f}\r\n".replace(".", ",") for p, q, r in x))
    run = tmp_path / "run"
    tk.train("mlp", str(train), model_options=TINY, out=run, **FAST)
    own, theirs = tk.predict(run, str(train)), tk.predict(run, str(field))
    assert len(theirs) == 30 and torch.equal(own.probs, theirs.probs)
    latin = write(tmp_path / "latin.csv", "a,b,c\n1,2,caf\u00e9\n", "latin-1")
    index = write(tmp_path / "index.csv", ",a,b,c\n0,1,2,3\n")
    for bad, words in ((latin, "line 2, column index 2: byte 0xe9 is not UTF-8"),
                       (index, "the header gives the column at index 0 no name")):
        code, _, err = cli("predict", run, "--data", bad, "--out", tmp_path / "p.csv")
        assert code == 2 and "Traceback" not in err, err
        assert err.count("\n") == 1 and err.startswith("transferkit: error: "), err
        assert words in err and str(bad) in err, err
