""".npz and .mat files as researchers bring them: crafted, damaged, MATLAB-shaped or holding
labels that could be read as something else. Each is read right or refused in one line naming
the file, the array and the fix; never a traceback, a terabyte allocation or silently wrong
classes. Every file is tiny (a crafted header declares the huge shape)."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from conftest import CLI_FAST, CliRunner, error_line
from transferkit.data import array_files
from transferkit.data.file_options import FileOptions
from transferkit.data.files import load_file_dataset, load_rows_to_predict
from transferkit.errors import DataError

ALL = FileOptions(test="all")


def rows(n: int = 6, features: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 n x features, y 0/1 alternating)."""
    x = np.arange(n * features, dtype=np.float32).reshape(n, features) / 10
    return x, np.arange(n) % 2


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """A .npy version 1.0 header declaring ``shape``, padded as NumPy pads it."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    text += b" " * ((64 - (11 + len(text)) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def crafted_npz(path: Path, x_member: bytes, compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("x.npy", x_member)
        archive.writestr("y.npy", npy_bytes(np.arange(6) % 2))
    return path


def test_a_header_declaring_a_huge_shape_is_refused_before_allocating(tmp_path: Path) -> None:
    """NumPy allocates the shape a member's header declares, then reads: 10**12 float64 was a
    MemoryError traceback (7.3 TiB), and a few GiB on a large machine an allocation for nothing."""
    huge = npy_header((10**6, 10**6)) + bytes(64)
    for compression, name in ((zipfile.ZIP_STORED, "huge.npz"), (zipfile.ZIP_DEFLATED, "z.npz")):
        path = crafted_npz(tmp_path / name, huge, compression)
        with pytest.raises(DataError, match=rf"{name}: array 'x' declares shape 1000000x1000000 "
                           r"\(float64, 7\.3 TiB\) but the archive holds 64 bytes of it; the "
                           r"file may be truncated or damaged"):
            load_file_dataset(path)
    negative = crafted_npz(tmp_path / "neg.npz", npy_header((-5, 4)) + bytes(64))
    with pytest.raises(DataError, match=r"array 'x' declares shape -5x4, which no array has"):
        load_file_dataset(negative)
    with pytest.raises(DataError, match=r"declares shape 1000000x1000000"):  # predict reads it
        load_rows_to_predict(tmp_path / "huge.npz", FileOptions(), lambda x: (0, 1))


def test_arrays_larger_than_free_memory_are_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zip bomb (zeros compress a thousandfold) and a sparse .mat of huge dimensions (read
    dense) are refused by their declared size against free memory; the sparse one was a
    7.3 TiB MemoryError traceback from ``toarray``."""
    sparse = scipy.sparse.coo_matrix(([1.0], ([0], [0])), shape=(10**9, 1000)).tocsc()
    scipy.io.savemat(tmp_path / "sparse.mat", {"fts": sparse, "labels": np.zeros((4, 1))})
    with pytest.raises(DataError, match=r"sparse.mat: array 'fts' \(1000000000x1000 sparse, "
                       r"read dense\) needs about 10\.9 TiB of memory to read, more than the "):
        load_file_dataset(tmp_path / "sparse.mat")
    np.savez_compressed(tmp_path / "bomb.npz", x=np.zeros((20000, 50)), y=np.arange(20000) % 2)
    assert (tmp_path / "bomb.npz").stat().st_size < 100_000  # 8 MB of float64 inside
    monkeypatch.setattr(array_files, "_free_memory", lambda: 1 << 20)
    with pytest.raises(DataError, match=r"bomb.npz: array 'x' \(20000x50 float64\) needs about "
                       r"11\.4 MiB of memory to read, more than the 1\.0 MiB free; keep fewer"):
        load_file_dataset(tmp_path / "bomb.npz")
    monkeypatch.setattr(array_files, "_free_memory", lambda: None)  # unknown: not checked
    assert load_file_dataset(tmp_path / "bomb.npz", ALL).train.x.shape == (20000, 50)


def test_encrypted_or_unknown_compression_members_are_one_line(tmp_path: Path) -> None:
    """zipfile raises RuntimeError (a password) and NotImplementedError (AES, method 99): they
    were tracebacks."""
    x, y = rows()
    np.savez_compressed(tmp_path / "plain.npz", x=x, y=y)
    data = bytearray((tmp_path / "plain.npz").read_bytes())
    locked, method = bytearray(data), bytearray(data)
    for signature, flags, compression in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(signature)
        while at != -1:
            locked[at + flags] |= 1
            method[at + compression] = 99
            at = data.find(signature, at + 1)
    (tmp_path / "locked.npz").write_bytes(bytes(locked))
    (tmp_path / "method.npz").write_bytes(bytes(method))
    with pytest.raises(DataError, match=r"locked.npz: array 'x' is encrypted \(a "
                       r"password-protected zip\); save it again with np.savez$"):
        load_file_dataset(tmp_path / "locked.npz")
    with pytest.raises(DataError, match=r"method.npz: cannot read array 'x' \(That compression "
                       r"method is not supported\); the file may be truncated or damaged"):
        load_file_dataset(tmp_path / "method.npz")


def test_labels_that_would_read_as_other_classes_are_refused(tmp_path: Path) -> None:
    """uint64 2**64-1 became class -1 (int64 wraps), bytes that are not UTF-8 were a
    UnicodeDecodeError traceback, and empty text ('' from a missing label) became a class."""
    x, y = rows()
    cases = {
        "wrap.npz": (np.where(y == 1, np.uint64(2**64 - 1), np.uint64(0)),
                     r"3 labels 'y' are too large for exact class numbers \(e\.g\. "
                     r"18446744073709551615\)"),
        "bytes.npz": (np.array([b"\xff\xfe", b"ok"])[y], r"labels 'y' are bytes that are not "
                      r"UTF-8 text .*save them as str"),
        "blank.npz": (np.array(["cat", "", "dog", " ", "cat", "dog"]),
                      r"2 labels 'y' are empty text \(first at row 1\): missing labels\?"),
    }
    for name, (labels, words) in cases.items():
        np.savez(tmp_path / name, x=x, y=labels)
        with pytest.raises(DataError, match=rf"{name}: {words}"):
            load_file_dataset(tmp_path / name)
    np.savez(tmp_path / "small.npz", x=x, y=y.astype(np.uint64) + 2**62)  # fits int64: read
    assert load_file_dataset(tmp_path / "small.npz", ALL).classes == (2**62, 2**62 + 1)


def test_matlab_labels_are_read_as_matlab_means_them(tmp_path: Path) -> None:
    """A char matrix pads its rows with spaces ('ant ' beside 'bird'; MATLAB's cellstr drops
    them), a cell array of numbers {1; 2} gave the strings '1.0', '2.0', and a cell holding
    two numbers was read as its first."""
    x, y = rows()
    scipy.io.savemat(tmp_path / "char.mat", {"fts": x, "labels": np.array(["ant", "bird"])[y]})
    assert load_file_dataset(tmp_path / "char.mat", ALL).classes == ("ant", "bird")
    cells = np.empty((6, 1), dtype=object)
    for i, label in enumerate(y):
        cells[i, 0] = np.array([[float(label + 1)]])
    scipy.io.savemat(tmp_path / "cells.mat", {"fts": x, "labels": cells})
    assert load_file_dataset(tmp_path / "cells.mat", ALL).classes == (1, 2)
    cells[2, 0] = np.array([[1.0, 2.0]])
    scipy.io.savemat(tmp_path / "pairs.mat", {"fts": x, "labels": cells})
    with pytest.raises(DataError, match=r"pairs.mat: labels 'labels' are a cell array that is "
                       r"not one string or number per row"):
        load_file_dataset(tmp_path / "pairs.mat")
    cells[2, 0] = "cat"
    scipy.io.savemat(tmp_path / "mixed.mat", {"fts": x, "labels": cells})
    with pytest.raises(DataError, match=r"cell array mixing strings and numbers"):
        load_file_dataset(tmp_path / "mixed.mat")


def test_messages_name_the_files_own_arrays(tmp_path: Path) -> None:
    """A .mat's 'fts' and 'labels' were called 'x' and 'y', and a struct or cell array was
    "[('a', 'O')] (V)" or "object (O)"; now they are named as the file names them, with what
    they are and the fix."""
    x, y = rows()
    cells = np.empty((6, 1), dtype=object)
    for i, row in enumerate(x):
        cells[i, 0] = row
    cases = {
        "struct.mat": ({"fts": {"a": x}, "labels": y[:, None]},
                       r"inputs 'fts' are a MATLAB struct \(1x1\), not a matrix of numbers; save "
                       r"the numeric matrix itself"),
        "cell.mat": ({"fts": cells, "labels": y[:, None]},
                     r"inputs 'fts' are a MATLAB cell \(6x1\)"),
        "slabels.mat": ({"fts": x, "labels": {"a": y}},
                        r"labels 'labels' are a MATLAB struct .*--data-opt y=NAME"),
        "complex.mat": ({"fts": x.astype(complex), "labels": y[:, None]},
                        r"inputs 'fts' are complex128 \(complex numbers\); give real numbers"),
        "nan.mat": ({"fts": np.where(x == 0, np.nan, x), "labels": y[:, None]},
                    r"inputs 'fts' hold 1 NaN"),
        "onehot.mat": ({"fts": x, "labels": np.eye(2)[y]},
                       r"labels 'labels' have shape \(6, 2\).*y\.argmax\(1\)"),
        "half.mat": ({"fts": x, "labels": np.array([[0.5, 1, 0, 1, 0, 1]])},
                     r"1 labels \(labels\) are not whole numbers"),
    }
    for name, (contents, words) in cases.items():
        scipy.io.savemat(tmp_path / name, contents)
        with pytest.raises(DataError, match=rf"{name}: {words}"):
            load_file_dataset(tmp_path / name)
    np.savez(tmp_path / "dates.npz", X=np.zeros((6, 2), dtype="datetime64[s]"), Y=y)
    with pytest.raises(DataError, match=r"inputs 'X' are datetime64\[s\] \(dates\); convert"):
        load_file_dataset(tmp_path / "dates.npz")


def test_rows_along_the_last_axis_are_named(tmp_path: Path) -> None:
    """MATLAB stores features x rows (SURF files transposed) and images H x W x C x N (SVHN's
    .mat): "800 input rows but 958 labels" did not say why."""
    x, y = rows(6, 4)
    scipy.io.savemat(tmp_path / "t.mat", {"fts": x.T, "labels": y[:, None]})
    with pytest.raises(DataError, match=r"t.mat: 4 input rows but 6 labels \(labels\); 'fts' is "
                       r"4x6: do its rows lie along the last axis.*fts'"):
        load_file_dataset(tmp_path / "t.mat")
    np.savez(tmp_path / "hwcn.npz", X=np.zeros((8, 8, 3, 6), np.uint8), y=y)
    with pytest.raises(DataError, match=r"8 input rows but 6 labels \(y\); 'X' is 8x8x3x6: "
                       r"do its rows lie along the last axis.*np\.moveaxis\(x, -1, 0\)"):
        load_file_dataset(tmp_path / "hwcn.npz")
    np.savez(tmp_path / "short.npz", x=x, y=y[:5])  # not transposed: the plain words
    with pytest.raises(DataError, match=r"6 input rows but 5 labels \(y\); give one label per "
                       r"row$"):
        load_file_dataset(tmp_path / "short.npz")


def test_inputs_of_no_values_are_refused_naming_the_file(tmp_path: Path, cli: CliRunner) -> None:
    """N x 0 inputs were read ("24 rows x 0 features") and failed later in the model builder
    without the file's name."""
    _, y = rows()
    np.savez(tmp_path / "empty.npz", x=np.zeros((6, 0)), y=y)
    with pytest.raises(DataError, match=r"empty.npz: inputs 'x' have shape \(6, 0\): rows of no "
                       r"values; give at least one feature per row"):
        load_file_dataset(tmp_path / "empty.npz")
    crafted_npz(tmp_path / "huge.npz", npy_header((10**6, 10**6)) + bytes(64))
    for name in ("empty.npz", "huge.npz"):  # the CLI: one line, exit 2
        code, _, err = cli("train", "--data", tmp_path / name, "--model", "mlp", "--epochs", "1",
                           "--out", tmp_path / f"run_{name}", *CLI_FAST)
        assert code == 2 and name in error_line(err)


def test_keras_and_scikit_learn_array_names_are_read(tmp_path: Path) -> None:
    """Keras' mnist.npz (x_train, y_train, x_test, y_test) was refused with a hint to read
    x_test as the rows; scikit-learn's data/target was refused."""
    x, y = rows(8)
    np.savez(tmp_path / "keras.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    data = load_file_dataset(tmp_path / "keras.npz")
    assert data.train.x.shape == (8, 3) and data.test.x.shape == (4, 3)
    assert "the file's test arrays (4 rows)" in data.description
    predicted = load_rows_to_predict(tmp_path / "keras.npz", FileOptions(), lambda x: (0, 1))
    assert predicted.train.x.shape == (12, 3)  # x_train then x_test
    np.savez(tmp_path / "bunch.npz", data=x, target=y + 5)
    assert load_file_dataset(tmp_path / "bunch.npz", ALL).classes == (5, 6)
